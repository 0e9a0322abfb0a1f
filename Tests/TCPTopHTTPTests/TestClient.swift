import CTCPTop
import Glibc
import Testing
@testable import TCPTopHTTP

/// A raw-socket HTTP client for tests: sends exactly the bytes given and
/// reads responses by hand, so malformed requests can be sent too.
final class TestClient {
    struct Response {
        var status: Int
        var headers: [String: String]  // lowercased names
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    enum Failure: Error { case connect(Int32), closed, timedOut, badChunk(String) }

    let fd: Int32
    private var pending: [UInt8] = []

    init(host: String, port: UInt16, readTimeoutSeconds: Int = 5, receiveBuffer: Int32? = nil) throws {
        let isIPv6 = host.contains(":")
        fd = socket(isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var result: Int32
        if isIPv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &address.sin6_addr)
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &address.sin_addr)
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw Failure.connect(code)
        }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func get(_ path: String, headers: String = "") throws -> Response {
        send("GET \(path) HTTP/1.1\r\nHost: test\r\n\(headers)\r\n")
        return try readResponse()
    }

    /// Reads one response; `bodyExpected: false` for HEAD.
    func readResponse(bodyExpected: Bool = true) throws -> Response {
        while firstIndex(of: [13, 10, 13, 10]) == nil { try fill() }
        let headEnd = firstIndex(of: [13, 10, 13, 10])!
        let lines = String(decoding: pending[..<headEnd], as: UTF8.self).split(separator: "\r\n")
        pending.removeFirst(headEnd + 4)
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = parts.count > 1 ? parts[1].trimmingWhitespace() : ""
        }
        guard bodyExpected else { return Response(status: status, headers: headers, body: []) }
        if headers["transfer-encoding"] == "chunked" {
            return Response(status: status, headers: headers, body: try readChunkedBody())
        }
        guard let length = headers["content-length"].flatMap({ Int($0) }) else {
            // Neither length nor chunks: the body ends when the server closes.
            while (try? fill()) != nil {}
            defer { pending = [] }
            return Response(status: status, headers: headers, body: pending)
        }
        return Response(status: status, headers: headers, body: try take(length))
    }

    /// A chunked body, decoded; throws when the connection ends before the last (empty) chunk.
    private func readChunkedBody() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            while firstIndex(of: [13, 10]) == nil { try fill() }
            let lineEnd = firstIndex(of: [13, 10])!
            let sizeText = String(decoding: pending[..<lineEnd], as: UTF8.self)
            pending.removeFirst(lineEnd + 2)
            guard let size = Int(sizeText, radix: 16) else { throw Failure.badChunk(sizeText) }
            let data = try take(size + 2)
            guard data.suffix(2) == [13, 10] else { throw Failure.badChunk("no CRLF after \(size) bytes") }
            if size == 0 { return body }
            body += data.dropLast(2)
        }
    }

    private func take(_ count: Int) throws -> [UInt8] {
        while pending.count < count { try fill() }
        defer { pending.removeFirst(count) }
        return Array(pending[..<count])
    }

    /// True while the server keeps the connection open (nothing readable, no hang-up), without waiting.
    func isOpen() -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return pending.isEmpty && poll(&entry, 1, 0) == 0
    }

    /// Sends raw bytes (a TLS record, say).
    func send(bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// True when the server closed the connection (EOF or reset) with nothing more to read.
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, 0)
        return count == 0 || (count < 0 && errno != EAGAIN)
    }

    /// Reads whatever arrives next, unparsed; 0 at end of stream.
    func readSome() throws -> Int {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 { throw errno == EAGAIN ? Failure.timedOut : Failure.closed }
        return count
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

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 { throw Failure.closed }
        if count < 0 { throw errno == EAGAIN ? Failure.timedOut : Failure.closed }
        pending += chunk[..<count]
    }

    private func firstIndex(of pattern: [UInt8]) -> Int? {
        guard pending.count >= pattern.count else { return nil }
        return (0...(pending.count - pattern.count)).first { pending[$0..<$0 + pattern.count].elementsEqual(pattern) }
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

/// Inflates one gzip member with zlib; nil if the data is not valid gzip.
func gunzip(_ data: [UInt8]) -> [UInt8]? {
    var stream = z_stream()
    // 15 + 16 window bits: expect a gzip header. inflateInit2 is a macro.
    guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var input = data
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    var status: Int32 = Z_OK
    input.withUnsafeMutableBufferPointer { inputBuffer in
        stream.next_in = inputBuffer.baseAddress
        stream.avail_in = uInt(inputBuffer.count)
        while status == Z_OK {
            chunk.withUnsafeMutableBufferPointer { chunkBuffer in
                stream.next_out = chunkBuffer.baseAddress
                stream.avail_out = uInt(chunkBuffer.count)
                status = inflate(&stream, Z_NO_FLUSH)
            }
            output += chunk[..<(chunk.count - Int(stream.avail_out))]
        }
    }
    return status == Z_STREAM_END ? output : nil
}
