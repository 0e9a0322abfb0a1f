import Glibc
import Testing
@testable import TCPTopHTTP

/// The tests' client: `HTTPClientConnection` under the names the server
/// tests use. It sends exactly the bytes given, so malformed requests can
/// be sent too, and reads responses one at a time.
final class TestClient {
    struct Response {
        var status: Int
        var headers: [String: String]  // lowercased names
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    enum Failure: Error { case connect(Int32), closed, timedOut }

    let connection: HTTPClientConnection
    var fd: Int32 { connection.fd }

    init(host: String, port: UInt16, readTimeoutSeconds: Int = 5, receiveBuffer: Int32? = nil) throws {
        var options = HTTPClient.Options()
        options.timeout = .seconds(readTimeoutSeconds)
        options.receiveBufferBytes = receiveBuffer
        do {
            connection = try HTTPClient(options: options).connect(host: host, port: port)
        } catch {
            throw Self.failure(error)
        }
    }

    /// Best effort, as a raw socket write: a server that already closed is seen when reading.
    func send(_ text: String) {
        try? connection.send(text)
    }

    func get(_ path: String, headers: String = "") throws -> Response {
        send("GET \(path) HTTP/1.1\r\nHost: test\r\n\(headers)\r\n")
        return try readResponse()
    }

    /// Reads one response; `bodyExpected: false` for HEAD.
    func readResponse(bodyExpected: Bool = true) throws -> Response {
        do {
            let reply = try connection.readReply(to: bodyExpected ? "GET" : "HEAD")
            var headers: [String: String] = [:]
            for field in reply.headers { headers[field.name.lowercased()] = field.value }
            return Response(status: reply.status, headers: headers, body: reply.body)
        } catch {
            throw Self.failure(error)
        }
    }

    /// True while the server keeps the connection open (nothing readable, no hang-up), without waiting.
    func isOpen() -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return !connection.hasBufferedBytes && poll(&entry, 1, 0) == 0
    }

    /// Sends raw bytes (a TLS record, say); best effort, like `send(_:)`.
    func send(bytes: [UInt8]) {
        try? connection.send(bytes)
    }

    /// True when the server closed the connection (EOF or reset) with nothing more to read.
    func isClosedByServer() -> Bool { connection.isClosedByPeer() }

    /// Reads whatever arrives next, unparsed; 0 at end of stream.
    func readSome() throws -> Int {
        do {
            return try connection.readSome().count
        } catch {
            throw Self.failure(error)
        }
    }

    private static func failure(_ error: HTTPClientError) -> Failure {
        switch error.kind {
        case .connect(let code): .connect(code)
        case .timedOut: .timedOut
        default: .closed
        }
    }

    /// Waits (at most `timeout` seconds) until the server has accepted this
    /// connection and then let go of it (closed its socket), whether or not
    /// the client read anything. Seen in /proc/net/tcp{,6}: the server end
    /// has an inode once accepted (0 while in the accept queue), and inode 0
    /// again, or is gone, once closed. True once that happened.
    func waitUntilServerReleasedConnection(serverPort: UInt16, timeout: Double = 5) -> Bool {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return false }
        // sin_port and sin6_port are at the same offset, in network byte order.
        let clientPort = withUnsafeBytes(of: &address) { UInt16($0[2]) << 8 | UInt16($0[3]) }
        func serverEndOwned() -> Bool {
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                for line in readProcFile(table).split(separator: "\n").dropFirst() {
                    let fields = line.split(separator: " ")
                    func port(_ field: Substring) -> UInt16? { field.split(separator: ":").last.flatMap { UInt16($0, radix: 16) } }
                    guard fields.count > 9, port(fields[1]) == serverPort, port(fields[2]) == clientPort else { continue }
                    return fields[9] != "0"
                }
            }
            return false
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        for owned in [false, true] {  // first until accepted, then until released
            while serverEndOwned() == owned {
                guard ContinuousClock.now < deadline else { return false }
                usleep(10_000)
            }
        }
        return true
    }

    /// A /proc file read whole (it has no size to go by, and may be many pages).
    private func readProcFile(_ path: String) -> String {
        let file = open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return "" }
        defer { close(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(file, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A table row: input text and what it should give. Shown shortened and
/// escaped in test output (some inputs are long or full of control bytes).
struct Case<Expected: Sendable>: Sendable, CustomTestStringConvertible {
    var text: String
    var expected: Expected
    init(_ text: String, _ expected: Expected) {
        self.text = text
        self.expected = expected
    }
    var testDescription: String {
        let escaped = text.debugDescription
        return escaped.count > 70 ? escaped.prefix(70) + "…\"" : escaped
    }
}

/// A gzip body decoded by the client's own inflater; nil when it is not gzip.
func gunzip(_ data: [UInt8]) -> [UInt8]? {
    try? HTTPGunzip.inflate(data, maxBytes: 1 << 30)
}

/// Waits, at most `timeout`, until `condition` holds (checked every 5 ms).
func waitFor(_ what: String, timeout: Duration = .seconds(10), _ condition: () -> Bool) throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TestClient.Failure.timedOut }
        usleep(5_000)
    }
}
