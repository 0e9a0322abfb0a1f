import Foundation
import Glibc
import TCPTopCore
import TCPTopHTTP

/// Executables are built next to the bench binary.
let buildDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path

/// The built `tcptop-exporter`, started the way systemd would: a
/// NOTIFY_SOCKET the bench binds, READY=1 awaited on it.
final class DaemonUnderTest {
    let process = Process()
    let port: UInt16
    let configPath: String?
    /// Seconds from the spawn call to READY=1.
    private(set) var startSeconds = 0.0
    private let logPath: String
    private var stopped = false

    var pid: pid_t { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Starts the daemon (with `arguments` added to its command line) and waits for READY=1.
    init(configPath: String? = nil, arguments: [String] = []) throws {
        let binary = buildDirectory + "/tcptop-exporter"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("\(binary) is missing: build it with the bench (swift build -c release)")
        }
        self.configPath = configPath
        port = try Self.freePort()
        let tag = "\(port)-\(UInt32.random(in: 0...UInt32.max))"
        logPath = Cleanup.shared.path("daemon-\(tag).log")
        let notify = try NotifyListener(path: Cleanup.shared.path("notify-\(tag)"))
        defer { notify.close() }  // after READY nobody listens; the daemon's later sd_notify calls just fail

        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--web.listen-address=127.0.0.1:\(port)"] + (configPath.map { ["--config.file=\($0)"] } ?? []) + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.path
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardInput = FileHandle.nullDevice

        let start = now()
        try process.run()
        Cleanup.shared.track(process.processIdentifier)
        do {
            try notify.waitForReady(timeout: 20) { [process] in process.isRunning }
        } catch {
            let text = log
            stop()
            throw BenchError("tcptop-exporter did not get ready: \(error); its log:\n\(text)")
        }
        startSeconds = now() - start
    }

    deinit { stop() }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    func stop() {
        guard !stopped else { return }
        stopped = true
        if process.isRunning {
            kill(pid, SIGTERM)
            let deadline = now() + 10
            while process.isRunning && now() < deadline { usleep(5_000) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        Cleanup.shared.untrack(pid)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// GET /metrics on a fresh connection; the body. 60 s: a large scrape of a loaded daemon takes seconds.
    func scrape() throws -> [UInt8] {
        var options = HTTPClient.Options()
        options.timeout = .seconds(60)
        let reply: HTTPClientReply
        do {
            reply = try HTTPClient(options: options).get(HTTPURL(host: "127.0.0.1", port: port, path: "/metrics"))
        } catch {
            throw BenchError("GET /metrics: \(error)")
        }
        guard reply.status == 200 else { throw BenchError("GET /metrics answered \(reply.statusLine)") }
        return reply.body
    }

    /// Seconds for one complete GET /metrics (request to the last byte), and the body.
    func timedScrape() throws -> (seconds: Double, body: [UInt8]) {
        let start = now()
        let body = try scrape()
        return (now() - start, body)
    }

    func metrics() throws -> [ParsedSample] {
        try ExpositionParser.parse(String(decoding: try scrape(), as: UTF8.self))
    }

    var peakRSS: UInt64 { statusBytes(pid: pid, field: "VmHWM") ?? 0 }

    /// Sets the daemon's peak RSS (VmHWM) back to its RSS now (clear_refs
    /// 5, as root), so that `peakRSS` then tells the peak of what follows.
    func resetPeakRSS() -> Bool {
        guard let file = FileHandle(forWritingAtPath: "/proc/\(pid)/clear_refs") else { return false }
        defer { try? file.close() }
        return (try? file.write(contentsOf: Data("5".utf8))) != nil
    }
    var restingRSS: UInt64 { statusBytes(pid: pid, field: "VmRSS") ?? 0 }

    private static func freePort() throws -> UInt16 {
        let (fd, port) = try Loopback.listen(backlog: 1)
        close(fd)
        return port
    }
}

/// The receiving end of sd_notify: a datagram socket bound to a path.
final class NotifyListener {
    let path: String
    private var fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw BenchError("notify path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw BenchError("binding the notify socket \(path): \(errnoText())")
        }
    }

    deinit { close() }

    func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
        unlink(path)
    }

    /// Reads datagrams until one holds READY=1 (a line of its own).
    func waitForReady(timeout: Double, alive: () -> Bool) throws {
        let deadline = now() + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while now() < deadline {
            guard alive() else { throw BenchError("it exited") }
            var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pollFD, 1, 20) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            let message = String(decoding: buffer[0..<count], as: UTF8.self)
            if message.split(separator: "\n").contains("READY=1") { return }
        }
        throw BenchError("no READY=1 within \(timeout) s")
    }
}
