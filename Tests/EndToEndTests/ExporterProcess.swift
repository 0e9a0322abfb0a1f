import Foundation
import Glibc
import TCPTopCore
import TCPTopHTTP
import TestChildProcess

/// The built tcptop-exporter binary, run as a child with a test NOTIFY_SOCKET.
final class ExporterProcess {
    /// Executables are built next to the test bundle.
    static let buildDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    static func binary(_ name: String) -> String { buildDirectory.appending(path: name).path }

    let process = ChildProcess()
    let notify: NotifySocket
    let port: UInt16
    private let stderrFile: URL

    /// Starts the daemon on a free loopback port; does not wait for READY.
    /// With `signalsUnblocked`, the daemon starts with no signal blocked, as
    /// systemd starts it (a test thread's mask, which ChildProcess passes on,
    /// blocks SIGHUP and SIGTERM). With `stderrReaderGone`, stderr is a
    /// pipe whose read end is closed before the daemon starts: every log
    /// write fails with EPIPE (and `log` is empty). `notify` is a socket made
    /// by the test (e.g. one nobody reads yet), else one read all the time.
    /// Without `listenFlags`, the listen addresses come from the config
    /// (they must include 127.0.0.1:`port`).
    init(arguments: [String] = [], port: UInt16 = ExporterProcess.freePort(), environment extra: [String: String] = [:],
         signalsUnblocked: Bool = false, stderrReaderGone: Bool = false, notify given: NotifySocket? = nil,
         listenFlags: Bool = true) throws {
        notify = try given ?? NotifySocket()
        self.port = port
        stderrFile = URL(fileURLWithPath: NSTemporaryDirectory() + "tcptop-exporter-\(port).log")
        FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        let command = [Self.binary("tcptop-exporter")]
            + (listenFlags ? ["--web.listen-address=127.0.0.1:\(port)", "--web.listen-address=[::1]:\(port)"] : [])
            + arguments
        if signalsUnblocked {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])"]
                + command
        } else {
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
        }
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.path
        environment.merge(extra) { $1 }
        process.environment = environment
        if stderrReaderGone {
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw PeerError(description: "pipe: \(String(cString: strerror(errno)))") }
            close(ends[0])
            let writeEnd = FileHandle(fileDescriptor: ends[1], closeOnDealloc: true)
            process.standardError = writeEnd
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            try? writeEnd.close()
        } else {
            process.standardError = try FileHandle(forWritingTo: stderrFile)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
        }
    }

    /// A daemon still running is stopped: SIGTERM, SIGKILL after 5 s.
    deinit {
        Child.stop(process, grace: 5)
        notify.close()
    }

    var log: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Waits for READY=1 (at most `timeout` seconds); fails at once, with the
    /// daemon's log, when the daemon exits first.
    func waitReady(timeout: Double = 10) throws {
        try waitNotify("READY=1", timeout: timeout)
    }

    /// Sends SIGHUP and waits for the READY=1 that ends the reload (the
    /// daemon sends RELOADING=1, reloads, logs the outcome, then READY=1).
    func reload(timeout: Double = 10) throws {
        let readyBefore = notify.messages.filter { $0.contains("READY=1") }.count
        let reloadingBefore = notify.messages.filter { $0.contains("RELOADING=1") }.count
        signal(SIGHUP)
        try waitNotify("RELOADING=1", count: reloadingBefore + 1, timeout: timeout)
        try waitNotify("READY=1", count: readyBefore + 1, timeout: timeout)
    }

    /// Waits for the `count`-th sd_notify message containing `text`.
    @discardableResult
    func waitNotify(_ text: String, count: Int = 1, timeout: Double = 10) throws -> String {
        do {
            return try notify.wait(for: text, count: count, timeout: timeout, giveUp: { [process] in !process.isRunning })
        } catch {
            guard !process.isRunning else { throw error }
            throw PeerError(description: "tcptop-exporter \(Child.ending(process)) before sd_notify \(text) (got \(notify.messages)); "
                                + "its log: \(log.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Scrapes until `condition` holds for the samples (every 50 ms, at most
    /// `timeout` seconds); returns them. Throws with `what` when it never holds.
    @discardableResult
    func waitForMetrics(_ what: String, timeout: Double = 10, _ condition: ([ParsedSample]) -> Bool) throws -> [ParsedSample] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let samples = try metrics()
            if condition(samples) { return samples }
            guard Date() < deadline else { throw PeerError(description: "no scrape showed \(what) within \(timeout) s") }
            usleep(50_000)
        }
    }

    /// GET (or `method`) on a connection of its own; the body as sent (gzip not decoded).
    func get(_ path: String = "/metrics", method: String = "GET", host: String = "127.0.0.1",
             headers: HTTPHeaders = [:]) throws -> HTTPClientReply {
        var options = HTTPClient.Options()
        options.timeout = .seconds(10)
        return try HTTPClient(options: options).request(method, HTTPURL(host: host, port: port, path: path), headers: headers)
    }

    func metrics() throws -> [ParsedSample] {
        let reply = try get()
        guard reply.status == 200 else { throw PeerError(description: "scrape answered \(reply.status)") }
        return try ExpositionParser.parse(String(decoding: reply.body, as: UTF8.self))
    }

    func signal(_ number: Int32) { process.signal(number) }

    /// The exit status, once the daemon exited (at most `timeout` seconds;
    /// past it the daemon is killed and an error thrown).
    func waitExit(timeout: Double = 10) throws -> Int32 {
        guard Child.waitExit(process, timeout: timeout) else {
            Child.stop(process, grace: 1)
            throw PeerError(description: "tcptop-exporter did not exit within \(timeout) s; its log: \(log)")
        }
        return process.terminationStatus
    }

    /// A port below the kernel's ephemeral range, so that no connect() can
    /// take it between this check and the daemon's bind (a port the kernel
    /// picked was once taken on ::1 by the suites' loopback churn first),
    /// free now on 127.0.0.1 and ::1, and a new one at each call.
    static func freePort() -> UInt16 {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: \.isWhitespace).compactMap { Int($0) } ?? []
        let low = 10_000, high = max((range.first ?? 32768) - 1, low + 1000)
        for _ in low...high {
            let candidate = nextPort.withLock { next -> Int in
                next = next < low || next >= high ? low : next + 1
                return next
            }
            if bindable(AF_INET, port: candidate) && bindable(AF_INET6, port: candidate) { return UInt16(candidate) }
        }
        return 0  // none free: the daemon's bind fails and says so
    }

    /// Ports are handed out in turn from a place set by the pid, so that two
    /// test processes rarely try the same one.
    private static let nextPort = Locked(10_000 + Int(getpid()) % 20_000)

    private static func bindable(_ family: Int32, port: Int) -> Bool {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if family == AF_INET { return onLoopback(port: UInt16(port), { bind(fd, $0, $1) }) == 0 }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = UInt16(port).bigEndian
        address.sin6_addr = in6addr_loopback
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
        }
    }
}
