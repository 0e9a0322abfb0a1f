import Foundation
import TCPTopBPF
import Glibc
import TCPTopCore
import TestChildProcess
import Testing

/// The real daemon, as a child process: READY=1 over a test NOTIFY_SOCKET,
/// exact bytes in /metrics for traffic between named processes, promtool,
/// reload, and a clean stop.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct DaemonTests {
    /// Process names that stress label escaping: quote, backslash, newline,
    /// and a byte that is not UTF-8. (argument for traffic_peer.py, bytes the kernel holds)
    static let awkwardNames: [(argument: String, bytes: [UInt8])] = [
        ("tt\"quote", Array("tt\"quote".utf8)),
        ("tt\\\\back", Array("tt\\back".utf8)),
        ("tt\\nline", Array("tt\nline".utf8)),
        ("tt\\xffbyte", [0x74, 0x74, 0xff, 0x62, 0x79, 0x74, 0x65]),
    ]

    @Test func servesExactBytesThenStopsCleanly() throws {
        let daemon = try ExporterProcess()
        try daemon.waitReady()

        var exchanges: [(TrafficPeers.Exchange, clientComm: [UInt8])] = []
        for (index, family) in ["4", "6", "4", "6"].enumerated() {
            let exchange = try TrafficPeers.exchange(
                family: family, clientName: Self.awkwardNames[index].argument, serverName: "tt-server-\(index)",
                clientSends: UInt64(1 + index * 250_001), serverSends: UInt64(123_457 * (index + 1)), seed: index)
            exchanges.append((exchange, Self.awkwardNames[index].bytes))
        }
        let reply = try daemon.get()
        #expect(reply.status == 200)
        #expect(reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let samples = try ExpositionParser.parse(String(decoding: reply.body, as: UTF8.self))
        var checked = 0
        for (exchange, clientComm) in exchanges {
            let family = exchange.family == "4" ? "ipv4" : "ipv6"
            let client = [
                "pid": "\(exchange.clientPID)", "comm": String(decoding: clientComm, as: UTF8.self), "family": family,
                "laddr": exchange.loopback, "lport": "\(exchange.clientPort)",
                "raddr": exchange.loopback, "rport": "\(exchange.serverPort)",
            ]
            let server = [
                "pid": "\(exchange.serverPID)", "comm": exchange.serverName, "family": family,
                "laddr": exchange.loopback, "lport": "\(exchange.serverPort)",
                "raddr": exchange.loopback, "rport": "\(exchange.clientPort)",
            ]
            #expect(value(samples, "tcptop_sent_bytes_total", client) == Double(exchange.clientSent))
            #expect(value(samples, "tcptop_received_bytes_total", client) == Double(exchange.serverSent))
            #expect(value(samples, "tcptop_sent_bytes_total", server) == Double(exchange.serverSent))
            #expect(value(samples, "tcptop_received_bytes_total", server) == Double(exchange.clientSent))
            checked += 2
        }
        #expect(checked == 8)
        try expectPromtoolAccepts(reply.body)
        // auto takes the first plan this kernel allows (AttachModeTests proves each).
        let expected = try #require(KernelPlans.allowed.first)
        #expect(value(samples, "tcptop_exporter_attach_mode",
                      ["mode": expected.hooks.rawValue, "read_path": expected.readPath.rawValue]) == 1)
        let plan = try #require(AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: KernelHooks.probe()).plans
            .first { $0.hooks == expected.hooks && $0.readPath == expected.readPath })
        #expect((value(samples, "process_resident_memory_bytes", [:]) ?? 0) > 1_000_000)

        let programIDs = bpfProgramIDs(ofProcess: daemon.process.processIdentifier)
        #expect(programIDs.count == plan.programs.count, "the programs of \(plan.name) are loaded")
        daemon.signal(SIGTERM)
        try daemon.waitNotify("STOPPING=1")
        #expect(try daemon.waitExit() == 0)
        // The kernel frees programs after an RCU grace period: allow it a moment.
        let deadline = Date().addingTimeInterval(5)
        var left = programIDs
        while !left.isEmpty && Date() < deadline {
            left = left.filter { run("/usr/sbin/bpftool", ["prog", "show", "id", "\($0)"]).status == 0 }
            if !left.isEmpty { usleep(100_000) }
        }
        #expect(left.isEmpty, "programs still loaded after exit: \(left)")
    }

    @Test func closedConnectionsStayForTheRetentionThenGo() throws {
        let config = try writeConfig("connections:\n  closed_retention: 1500ms\n  poll_interval: 200ms\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", config])
        try daemon.waitReady()
        let exchange = try TrafficPeers.exchange(
            family: "4", clientName: "tt-retain-c", serverName: "tt-retain-s", clientSends: 777, serverSends: 5)
        let closed = Date()
        let labels = ["pid": "\(exchange.clientPID)", "comm": "tt-retain-c"]
        // The peers have exited: their sockets are closed, and still served.
        #expect(value(try daemon.metrics(), "tcptop_sent_bytes_total", labels) == 777)
        // Scraped until the series goes: it keeps its final value until then,
        // and goes once the retention (1.5 s after the last byte) has passed.
        var served: [Double] = []
        try daemon.waitForMetrics("the closed connection's series gone", timeout: 10) { samples in
            guard let sent = value(samples, "tcptop_sent_bytes_total", labels) else { return true }
            served.append(sent)
            return false
        }
        let goneAfter = Date().timeIntervalSince(closed)
        #expect(served.allSatisfy { $0 == 777 }, "\(served)")
        #expect(goneAfter >= 1.0 && goneAfter < 2.5, "gone \(goneAfter) s after the peers exited")
    }

    @Test func aBadConfigOnReloadIsLoggedAndTheOldOneKept() throws {
        let path = try writeConfig("log:\n  level: info\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", path])
        try daemon.waitReady()
        try "bpf:\n  map_capacity: lots\n".write(toFile: path, atomically: true, encoding: .utf8)
        try daemon.reload()
        #expect(daemon.log.contains("reload failed, keeping the running configuration"))
        #expect(daemon.log.contains("bpf.map_capacity"))
        #expect(try daemon.get().status == 200)
        #expect(try daemon.get("/", host: "::1").status == 200)
    }

    /// SIGPIPE is ignored and a failed log write dropped: a reload logs a
    /// line (and the start logs several) into a pipe nobody reads, and the
    /// daemon goes on serving, then stops cleanly.
    @Test func aStderrReaderThatHasGoneDoesNotStopTheDaemon() throws {
        let path = try writeConfig("log:\n  level: debug\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", path], stderrReaderGone: true)
        try daemon.waitReady()
        #expect(try daemon.get().status == 200)
        try daemon.reload()
        try daemon.reload()
        #expect(try daemon.get().status == 200)
        #expect(try daemon.get("/", host: "::1").status == 200)
        daemon.signal(SIGTERM)
        #expect(try daemon.waitExit() == 0)
    }

    /// Values that used to trap (SIGILL) at start: one line, exit 2; on reload, a refusal and the old config.
    @Test func durationsPastTheirBoundAreOneLineAtStartAndRefusedOnReload() throws {
        for (yaml, key) in [("connections: {poll_interval: 1000y}", "connections.poll_interval"),
                            ("connections: {closed_retention: 9999999999999h}", "connections.closed_retention"),
                            ("web: {read_timeout: 1000y}", "web.read_timeout"),
                            ("web: {write_timeout: 99999999999999999999s}", "web.write_timeout")] {
            let bad = try writeConfig(yaml + "\n")
            let started = run(ExporterProcess.binary("tcptop-exporter"),
                              ["--config.file", bad, "--web.listen-address=127.0.0.1:\(ExporterProcess.freePort())"], timeout: 20)
            #expect(started.status == 2, "\(yaml): exit \(started.status), \(started.stderr)")
            #expect(started.stderr.split(separator: "\n").count == 1)
            #expect(started.stderr.hasPrefix("tcptop-exporter: config: \(key): must be at most "), "\(started.stderr)")
        }
        let path = try writeConfig("log:\n  level: info\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", path])
        try daemon.waitReady()
        try "connections: {poll_interval: 1000y}\n".write(toFile: path, atomically: true, encoding: .utf8)
        try daemon.reload()
        #expect(daemon.log.contains("reload failed, keeping the running configuration"))
        #expect(daemon.log.contains("connections.poll_interval: must be at most 1h"))
        #expect(try daemon.get().status == 200)
        daemon.signal(SIGTERM)
        #expect(try daemon.waitExit() == 0)
    }

    @Test func aReloadAppliesANewRetention() throws {
        let path = try writeConfig("connections:\n  closed_retention: 1h\n  poll_interval: 200ms\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", path])
        try daemon.waitReady()
        let exchange = try TrafficPeers.exchange(
            family: "6", clientName: "tt-reload-c", serverName: "tt-reload-s", clientSends: 99, serverSends: 1)
        let labels = ["pid": "\(exchange.clientPID)", "comm": "tt-reload-c"]
        #expect(value(try daemon.metrics(), "tcptop_sent_bytes_total", labels) == 99)
        try "connections:\n  closed_retention: 300ms\n  poll_interval: 100ms\n".write(toFile: path, atomically: true, encoding: .utf8)
        try daemon.reload()
        #expect(daemon.log.contains("configuration reloaded"))
        // With the old retention (1 h) it would stay; with the new one it goes within a second.
        let reloaded = Date()
        try daemon.waitForMetrics("the closed connection's series gone after the reload", timeout: 5) {
            value($0, "tcptop_sent_bytes_total", labels) == nil
        }
        #expect(Date().timeIntervalSince(reloaded) < 1.5)
    }

    @Test func routesAnswerLikeAnExporter() throws {
        let daemon = try ExporterProcess(arguments: ["--web.telemetry-path=/probe"])
        try daemon.waitReady()
        let landing = try daemon.get("/")
        #expect(landing.status == 200)
        #expect(String(decoding: landing.body, as: UTF8.self).contains("href=\"/probe\""))
        #expect(try daemon.get("/probe").status == 200)
        #expect(try daemon.get("/metrics").status == 404)
        let post = try daemon.get("/probe", method: "POST")
        #expect(post.status == 405)
        let gzipped = try daemon.get("/probe", headers: ["Accept-Encoding": "gzip"])
        #expect(gzipped.headers["content-encoding"] == "gzip")
        #expect(gzipped.body.starts(with: [0x1f, 0x8b]))
    }

    @Test func pingsTheWatchdogWhenSystemdAsks() throws {
        let daemon = try ExporterProcess(environment: ["WATCHDOG_USEC": "400000"])
        try daemon.waitReady()
        try daemon.waitNotify("WATCHDOG=1", timeout: 2)
        #expect(daemon.log.contains("watchdog enabled"))
    }

    @Test func theShippedUnitPassesSystemdAnalyzeVerify() throws {
        // The unit as shipped, with ExecStart pointing at the binary just built.
        let unit = try String(contentsOf: TrafficPeers.packageRoot.appending(path: "systemd/tcptop-exporter.service"), encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("WatchdogSec=") && unit.contains("ExecReload="))
        let directory = NSTemporaryDirectory() + "tcptop-unit-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/tcptop-exporter.service"
        try unit.replacingOccurrences(of: "/usr/local/bin/tcptop-exporter", with: ExporterProcess.binary("tcptop-exporter"))
            .write(toFile: path, atomically: true, encoding: .utf8)
        let verify = run("/usr/bin/systemd-analyze", ["verify", path])
        #expect(verify.status == 0, "systemd-analyze verify: \(verify.stderr)")
        #expect(!verify.stderr.contains("tcptop-exporter.service:"), "warnings about the unit: \(verify.stderr)")
    }

    @Test func startupErrorsAreOneLineAndNeverReady() throws {
        // A bad config file: exit 2, one line naming the key.
        let bad = try writeConfig("web:\n  telemetry_path: metrics\n")
        let badConfig = run(ExporterProcess.binary("tcptop-exporter"), ["--config.file", bad])
        #expect(badConfig.status == 2)
        #expect(badConfig.stderr.split(separator: "\n").count == 1)
        #expect(badConfig.stderr.contains("web.telemetry_path"))

        // The flag goes by the config key's rule: a "?" would make every scrape a 404.
        let badPath = run(ExporterProcess.binary("tcptop-exporter"),
                          ["--web.telemetry-path=/metrics?x", "--web.listen-address=127.0.0.1:\(ExporterProcess.freePort())"])
        #expect(badPath.status == 2)
        #expect(badPath.stderr == ##"tcptop-exporter: --web.telemetry-path: must be a path that starts with "/" and is not "/", without spaces, "?" or "#", got "/metrics?x""## + "\n")

        // The port is taken: exit 1 and the address in the error.
        let first = try ExporterProcess()
        try first.waitReady()
        let second = try ExporterProcess(port: first.port)
        #expect(try second.waitExit() == 1)
        #expect(second.log.contains("Address already in use"))
        #expect(!second.notify.messages.contains { $0.contains("READY=1") })

        // A hook this kernel refuses (fentry/fexit is EPERM here): one line, exit 1.
        let forced = try ExporterProcess(arguments: ["--bpf.attach-mode=fexit"])
        #expect(try forced.waitExit() == 1)
        #expect(forced.log.contains("fexit"))
        #expect(!forced.notify.messages.contains { $0.contains("READY=1") })

        // No privileges: the missing capability is named.
        let unprivileged = run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups",
                                                     ExporterProcess.binary("tcptop-exporter"), "--web.listen-address=127.0.0.1:\(ExporterProcess.freePort())"])
        #expect(unprivileged.status == 1)
        #expect(unprivileged.stderr.contains("missing capability CAP_BPF and CAP_PERFMON"))
    }
}

/// A reload that changes `web`: an address that stays never stops
/// accepting (its socket is shared with the new listeners), and one that
/// cannot be bound leaves the running listeners serving.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct ReloadListenerTests {
    @Test func aReloadThatChangesWebNeverLosesTheListener() throws {
        let port = ExporterProcess.freePort()
        // The test's own socket holds `held` (a port the kernel picks, held
        // from the start): the daemon cannot bind it.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        try #require(onLoopback(port: 0, { bind(holder, $0, $1) }) == 0 && listen(holder, 1) == 0,
                     "holding a loopback port: \(String(cString: strerror(errno)))")
        var bound = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(holder, $0, &length) } }
        let held = UInt16(bigEndian: bound.sin_port)

        let path = try writeConfig("web: {listen_addresses: [\"127.0.0.1:\(port)\"]}\n")
        let daemon = try ExporterProcess(arguments: ["--config.file=\(path)"], port: port, listenFlags: false)
        try daemon.waitReady()

        try "web: {listen_addresses: [\"127.0.0.1:\(port)\", \"127.0.0.1:\(held)\"]}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        try daemon.reload()
        #expect(daemon.log.contains("listen 127.0.0.1:\(held): Address already in use; the previous listeners keep serving"))
        #expect(try daemon.get("/metrics").status == 200)

        // A web change that keeps the address, while a client connects over
        // and over, and an idle client holds a connection: the old listeners
        // wait for it (up to their grace period) before they close.
        let idle = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(idle) }
        try #require(onLoopback(port: port, { connect(idle, $0, $1) }) == 0)
        let listeningBefore = try listeningSocketInode(port: port)
        let prober = ConnectProber(port: port)
        try "web: {listen_addresses: [\"127.0.0.1:\(port)\"], read_timeout: 7s}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        try daemon.reload()
        // The very same listening socket: the address was never unbound.
        #expect(try listeningSocketInode(port: port) == listeningBefore)
        let (attempts, refused) = prober.stop()
        #expect(daemon.log.contains("configuration reloaded"))
        #expect(attempts > 0 && refused == 0, "\(refused) of \(attempts) connects refused during the reload")
        #expect(try daemon.get("/metrics").status == 200)
        daemon.signal(SIGTERM)
        #expect(try daemon.waitExit() == 0)
    }
}

/// Calls `body` (bind, connect) with the address 127.0.0.1:port.
func onLoopback(port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp).
func listeningSocketInode(port: UInt16) throws -> String {
    // Read to the end: String(contentsOfFile:) can stop after one page of a /proc file.
    guard let handle = FileHandle(forReadingAtPath: "/proc/net/tcp") else { throw PeerError(description: "no /proc/net/tcp") }
    defer { try? handle.close() }
    let table = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    let local = String(format: "0100007F:%04X", port)
    for line in table.split(separator: "\n") {
        let fields = line.split(separator: " ")
        // sl local_address rem_address st ... inode (10th field)
        if fields.count > 9, fields[1] == local, fields[3] == "0A" { return String(fields[9]) }
    }
    throw PeerError(description: "nothing listens on 127.0.0.1:\(port)")
}

/// Connects to 127.0.0.1:port over and over on a thread of its own (at most
/// 30 s) and counts the connects refused.
final class ConnectProber: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true, attempts = 0, refused = 0
    private let done = DispatchSemaphore(value: 0)

    init(port: UInt16) {
        Thread.detachNewThread { [self] in
            let deadline = Date().addingTimeInterval(30)
            while lock.withLock({ running }), Date() < deadline {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                let wasRefused = onLoopback(port: port, { connect(fd, $0, $1) }) != 0 && errno == ECONNREFUSED
                close(fd)
                lock.withLock {
                    attempts += 1
                    if wasRefused { refused += 1 }
                }
            }
            done.signal()
        }
    }

    /// Stops probing; returns (attempts, refused).
    func stop() -> (Int, Int) {
        lock.withLock { running = false }
        _ = done.wait(timeout: .now() + 35)
        return lock.withLock { (attempts, refused) }
    }
}

/// As systemd starts it, with no signal blocked: a SIGHUP sent right after
/// READY=1 (systemctl reload just after start) is a reload, never lost.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct EarlySignalTests {
    @Test func aReloadRightAfterReadyIsNeverLost() throws {
        for _ in 0..<8 {
            let daemon = try ExporterProcess(signalsUnblocked: true)
            try daemon.waitReady()
            try daemon.reload(timeout: 5)
            daemon.signal(SIGTERM)
            #expect(try daemon.waitExit() == 0)
        }
    }
}

func value(_ samples: [ParsedSample], _ name: String, _ labels: [String: String]) -> Double? {
    samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
}

/// A config whose one view keeps only `family`: for tests that time or
/// cost the daemon itself, whose figures must not follow the connections
/// other suites have open on the host (each read still takes them all).
func smallViewConfig() throws -> String {
    try writeConfig("views:\n  - {prefix: tcptop, labels: [family]}\n")
}

func writeConfig(_ text: String) throws -> String {
    let path = NSTemporaryDirectory() + "tcptop-config-\(UInt32.random(in: 0...UInt32.max)).yml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func expectPromtoolAccepts(_ body: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
    let file = NSTemporaryDirectory() + "tcptop-metrics-\(UInt32.random(in: 0...UInt32.max)).txt"
    try Data(body).write(to: URL(fileURLWithPath: file))
    let result = run("/bin/sh", ["-c", "promtool check metrics < \(file)"])
    #expect(result.status == 0, "promtool: \(result.stdout) \(result.stderr)", sourceLocation: sourceLocation)
}

/// The ids of the BPF programs a process holds open (program and link fds), from its fdinfo.
func bpfProgramIDs(ofProcess pid: Int32) -> Set<Int> {
    let directory = "/proc/\(pid)/fdinfo"
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return Set(fds.compactMap { fd -> Int? in
        guard let info = try? String(contentsOfFile: "\(directory)/\(fd)", encoding: .utf8) else { return nil }
        return info.split(separator: "\n").first { $0.hasPrefix("prog_id:") }
            .flatMap { Int($0.dropFirst("prog_id:".count).trimmingCharacters(in: .whitespaces)) }
    })
}

/// Runs a command to its end, at most `timeout` seconds: past it the command
/// is killed and the status is -1, with the reason in stderr.
@discardableResult
func run(_ executable: String, _ arguments: [String], timeout: Double = 60) -> (status: Int32, stdout: String, stderr: String) {
    let process = ChildProcess()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = PipeReader(), err = PipeReader()
    process.standardOutput = out.pipe
    process.standardError = err.pipe
    process.standardInput = FileHandle.nullDevice
    do { try process.run() } catch { return (-1, "", "\(error)") }
    let deadline = Date().addingTimeInterval(timeout)
    guard PipeReader.read([out, err], until: deadline), Child.waitExit(process, timeout: max(0, deadline.timeIntervalSinceNow)) else {
        Child.stop(process, grace: 1)
        return (-1, out.text, err.text + "\n\(executable) \(arguments) did not finish within \(timeout) s")
    }
    return (process.terminationStatus, out.text, err.text)
}
