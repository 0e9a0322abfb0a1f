import Foundation
import Glibc
import TCPTopCore
import TestChildProcess
import Testing

/// The built `tcptop` binary as a child: known traffic between named
/// processes must show up as rows with the right pids, names, addresses
/// and KB; filters, `--from`, signals and usage errors.
@Suite(.serialized)
struct TcptopTests {
    static let binary = ExporterProcess.binary("tcptop")
    /// Rows for runs that see the whole host: other suites move bytes at the
    /// same time, and the default 20 rows can leave the exchange's rows out.
    let allRows = "100000"

    // MARK: Real BPF (root)

    @Test(.enabled(if: runningAsRoot, "needs root for BPF"), arguments: ["4", "6"])
    func showsKnownTrafficPerConnectionEnd(family: String) throws {
        let top = try TcptopRun(["-C", "-r", allRows, "1", "2"])
        try top.waitForTracing()
        let exchange = try TrafficPeers.exchange(
            family: family, clientName: "tt-top-cli", serverName: "tt-top-srv",
            clientSends: 300 * 1024, serverSends: 200 * 1024 + 1000, seed: 3)
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        #expect(output.intervals == 2)
        try expectExchange(exchange, in: output)
        #expect(!output.stdout.contains("\u{1B}"))
        // The peers exited before the print: their names are still shown.
        let header = family == "4" ? "PID    COMM         LADDR                 RADDR                  RX_KB  TX_KB"
            : "PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB"
        #expect(output.stdout.contains(header))
    }

    /// A connection that stays open across intervals: its bytes are shown in
    /// the interval they moved in, not again in the later ones.
    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func anOpenConnectionIsCountedOnlyInTheIntervalItMoved() throws {
        let top = try TcptopRun(["-C", "-r", allRows, "1", "4"])
        try top.waitForTracing()
        let server = try HeldPeer(["serve", "--family", "4", "--name", "tt-held-srv", "--receive", "409600", "--send", "0"])
        let client = try HeldPeer(["connect", "--family", "4", "--name", "tt-held-cli", "--port", "\(server.ready.port)",
                                   "--send", "409600", "--receive", "0"])
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        // Two more intervals pass with the connection open and idle.
        try top.waitForIntervals(top.intervalsSoFar + 2)
        client.release()
        server.release()
        try client.waitFor("DONE")
        try server.waitFor("DONE")
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        let clientRows = output.lines.filter { $0.hasPrefix("\(client.ready.pid) ") }
        #expect((1...2).contains(clientRows.count), "rows only while bytes moved: \(clientRows)")
        let sent = output.totals().filter { $0.key.pid == client.ready.pid }.map(\.value.tx).reduce(0, +)
        #expect((399...400).contains(sent), "400 KiB once, not once per interval: \(output.stdout)")
    }

    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func pidFilterShowsOnlyThatProcess() throws {
        let server = try LinePeer(["serve", "--family", "4", "--name", "tt-pid-srv", "--receive", "204800", "--send", "102400"])
        let (serverPID, serverPort) = try server.readReady()
        let top = try TcptopRun(["-C", "-p", "\(serverPID)", "1", "2"])
        try top.waitForTracing()
        let client = try LinePeer(["connect", "--family", "4", "--name", "tt-pid-cli", "--port", "\(serverPort)",
                                   "--send", "204800", "--receive", "102400"])
        _ = try client.readReady()
        try client.waitDone()
        try server.waitDone()
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        let totals = output.totals()
        #expect(Set(totals.keys.map(\.pid)) == [serverPID])
        #expect(totals.values.map(\.rx).reduce(0, +) >= 199)
        #expect(totals.keys.allSatisfy { $0.comm == "tt-pid-srv" })
    }

    @Test(.enabled(if: runningAsRoot && cgroup2Mount != nil, "needs root and a cgroup v2 mount"))
    func cgroupFilterShowsOnlyProcessesInIt() throws {
        let directory = cgroup2Mount! + "/tcptop-test-\(getpid())"
        try #require(mkdir(directory, 0o755) == 0 || errno == EEXIST, "mkdir \(directory)")
        defer { rmdir(directory) }
        let server = try LinePeer(["serve", "--family", "4", "--name", "tt-cg-srv", "--receive", "102400", "--send", "204800"])
        defer { Child.stop(server.process) }  // before the rmdir: a cgroup with a process in it stays
        let (serverPID, serverPort) = try server.readReady()
        try "\(serverPID)\n".write(toFile: directory + "/cgroup.procs", atomically: false, encoding: .utf8)

        let top = try TcptopRun(["-C", "-c", directory, "1", "2"])
        try top.waitForTracing()
        let client = try LinePeer(["connect", "--family", "4", "--name", "tt-cg-cli", "--port", "\(serverPort)",
                                   "--send", "102400", "--receive", "204800"])
        _ = try client.readReady()
        try client.waitDone()
        try server.waitDone()
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        let totals = output.totals()
        #expect(Set(totals.keys.map(\.pid)) == [serverPID])
        let row = try #require(totals.first { $0.key.pid == serverPID })
        #expect(row.key.comm == "tt-cg-srv")
        #expect((199...200).contains(row.value.tx) && (99...100).contains(row.value.rx))
    }

    @Test(.enabled(if: runningAsRoot, "needs root for the exporter"))
    func fromAnExporterShowsTheSameRowsWithoutRoot() throws {
        let daemon = try ExporterProcess()
        try daemon.waitReady()
        let traced = try TcptopRun(["-C", "-r", allRows, "1", "3"])
        // As nobody, without capabilities: --from needs no privilege.
        let viewed = try TcptopRun(["--from", "http://127.0.0.1:\(daemon.port)/metrics", "-C", "-r", allRows, "1", "3"], asNobody: true)
        try traced.waitForTracing()
        try viewed.waitForTracing()
        let exchange = try TrafficPeers.exchange(
            family: "4", clientName: "tt-from-cli", serverName: "tt-from-srv",
            clientSends: 150 * 1024, serverSends: 250 * 1024, seed: 5)
        let tracedOutput = try traced.finish(), viewedOutput = try viewed.finish()
        #expect(viewedOutput.status == 0, "stderr: \(viewedOutput.stderr)")
        #expect(viewedOutput.intervals == 3)
        #expect(viewedOutput.stdout.contains(" source: http://127.0.0.1:\(daemon.port)/metrics\n"))
        try expectExchange(exchange, in: viewedOutput)
        try expectExchange(exchange, in: tracedOutput)
        let ours: (TcptopOutput.RowKey) -> Bool = { $0.pid == exchange.clientPID || $0.pid == exchange.serverPID }
        #expect(viewedOutput.totals().filter { ours($0.key) }.mapValues { [$0.rx, $0.tx] }
            == tracedOutput.totals().filter { ours($0.key) }.mapValues { [$0.rx, $0.tx] })

        // -p and -4/-6 filter on the exporter's labels.
        let filtered = try TcptopRun(["--from", "127.0.0.1:\(daemon.port)", "-C", "-p", "\(exchange.serverPID)", "-6", "1", "1"])
        let filteredOutput = try filtered.finish()
        #expect(filteredOutput.status == 0 && filteredOutput.totals().isEmpty)
    }

    /// --from https:// with the CA and basic auth (password from a file, or
    /// TCPTOP_PASSWORD), against the daemon serving TLS.
    @Test(.enabled(if: runningAsRoot, "needs root for the exporter"))
    func fromAnExporterOverTLSWithBasicAuth() throws {
        let pki = try TLSDaemonTests.pki.get()
        let web = pki.directory + "/tcptop-web-\(UUID().uuidString).yml"
        try ("tls_server_config: {cert_file: server.crt, key_file: server.key}\n" + (try webConfigText(users: ["viewer": "view-pw"])))
            .write(toFile: web, atomically: true, encoding: .utf8)
        let passwordFile = pki.directory + "/viewer-password"
        try "view-pw\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        chmod(pki.directory, 0o755)
        chmod(pki.path("ca.crt"), 0o644)
        chmod(passwordFile, 0o644)
        let daemon = try ExporterProcess(arguments: ["--web.config.file", web])
        try daemon.waitReady()
        let url = "https://127.0.0.1:\(daemon.port)/metrics"
        let viewed = try TcptopRun(["--from", url, "--ca-file", pki.path("ca.crt"), "--user", "viewer", "--password-file", passwordFile,
                                    "-C", "1", "5"], asNobody: true)
        try viewed.waitForTracing()
        let exchange = try TrafficPeers.exchange(
            family: "4", clientName: "tt-tls-cli", serverName: "tt-tls-srv",
            clientSends: 120 * 1024, serverSends: 80 * 1024, seed: 9)
        let output = try viewed.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        #expect(output.stdout.contains(" source: \(url)\n"))
        try expectExchange(exchange, in: output)

        let wrong = try TcptopRun(["--from", url, "--ca-file", pki.path("ca.crt"), "--user", "viewer", "1", "1"],
                                  environment: ["TCPTOP_PASSWORD": "not-it"]).finish()
        #expect(wrong.status == 1 && wrong.stderr == "tcptop: --from \(url): HTTP 401 Unauthorized\n", "\(wrong.stderr)")
        let unknownCA = try TcptopRun(["--from", url, "1", "1"]).finish()
        #expect(unknownCA.status == 1 && unknownCA.stderr.contains("certificate verify failed"), "\(unknownCA.stderr)")
    }

    @Test(.enabled(if: runningAsRoot, "needs root for BPF"), arguments: [SIGINT, SIGTERM])
    func aStopSignalEndsItAtOnceAndDetaches(signal: Int32) throws {
        let top = try TcptopRun(["-C", "10"])
        try top.waitForTracing()
        let programs = bpfProgramIDs(ofProcess: top.process.processIdentifier)
        #expect(!programs.isEmpty, "the BPF programs are attached")
        let start = Date()
        top.process.signal(signal)
        let output = try top.finish(timeout: 2)
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(output.status == 0 && output.stderr.isEmpty)
        #expect(output.intervals == 0)
        // The kernel frees programs shortly after their last reference goes (RCU).
        func loaded() -> [Int] { programs.filter { run("/usr/sbin/bpftool", ["prog", "show", "id", "\($0)"]).status == 0 } }
        let deadline = Date().addingTimeInterval(3)
        while !loaded().isEmpty && Date() < deadline { usleep(50_000) }
        #expect(loaded().isEmpty, "the programs are gone")
    }

    /// The longest interval the argument takes waits (it trapped converting the wait to a timespec) and stops on a signal.
    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func theLongestIntervalWaitsAndStops() throws {
        let top = try TcptopRun(["-C", "\(Int.max)", "1"])
        try top.waitForTracing()
        usleep(300_000)
        top.process.signal(SIGINT)
        let output = try top.finish(timeout: 5)
        #expect(output.status == 0 && output.stderr.isEmpty)
    }

    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func aPipeGetsCleanTextAndNoSummaryWithS() throws {
        let plain = try TcptopRun(["1", "1"]).finish()  // no -C: stdout is a pipe, so no clearing
        #expect(plain.status == 0 && !plain.stdout.contains("\u{1B}"))
        #expect(plain.stdout.hasPrefix("Tracing... Output every 1 secs. Hit Ctrl-C to end\n\n"))
        #expect(plain.summaryLines == 1)
        let quiet = try TcptopRun(["-S", "1", "1"]).finish()
        #expect(quiet.status == 0 && quiet.summaryLines == 0)
    }

    @Test(.enabled(if: runningAsRoot, "needs root to drop it"))
    func withoutPrivilegeItSaysSoInOneLine() throws {
        let output = try TcptopRun(["1", "1"], asNobody: true).finish()
        #expect(output.status == 1)
        #expect(output.stderr.hasPrefix("tcptop: missing capability CAP_BPF and CAP_PERFMON"))
        #expect(output.stderr.split(separator: "\n").count == 1)
    }

    // MARK: No privilege needed

    @Test func anUnreachableExporterIsOneErrorLine() throws {
        let port = ExporterProcess.freePort()
        let output = try TcptopRun(["--from", "http://127.0.0.1:\(port)/metrics", "1", "1"]).finish()
        #expect(output.status == 1)
        #expect(output.stderr == "tcptop: --from http://127.0.0.1:\(port)/metrics: connect 127.0.0.1:\(port): Connection refused\n")
        #expect(output.stdout.isEmpty)
    }

    /// An exporter that never answers (its listener accepts nothing; the
    /// kernel queues the connection): a stop signal during the fetch ends
    /// tcptop at once, long before the fetch's 5 s timeout.
    @Test func aStopSignalDuringAFetchEndsItAtOnce() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 4) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        try #require(listening)
        let top = try TcptopRun(["--from", "127.0.0.1:\(UInt16(bigEndian: address.sin_port))", "1", "1"])
        // The listener turns readable once tcptop's connection is queued: it is waiting for the reply.
        var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        try #require(poll(&poller, 1, 10_000) == 1)
        let signalled = Date()
        top.process.signal(SIGINT)
        let output = try top.finish(timeout: 10)
        #expect(output.status == 0 && output.stdout.isEmpty && output.stderr.isEmpty)
        #expect(Date().timeIntervalSince(signalled) < 2)
    }

    @Test func helpPrintsTheUsage() throws {
        let output = try TcptopRun(["-h"]).finish()
        #expect(output.status == 0 && output.stdout == TopArguments.usage && output.stderr.isEmpty)
    }

    @Test(arguments: [
        ["0"], ["-5"], ["1", "0"], ["-s", "bytes"], ["-4", "-6"], ["-p", "abc"], ["--pid"], ["-r", "x"],
        ["--from", "h", "-c", "/x"], ["--from", "ftp://h"], ["--user", "u"], ["--from", "http://h", "--ca-file", "/x"], ["-z"], ["1", "2", "3"],
    ])
    func badArgumentsAreOneLineAndExitTwo(arguments: [String]) throws {
        let output = try TcptopRun(arguments).finish()
        #expect(output.status == 2)
        #expect(output.stderr.hasPrefix("tcptop: "))
        #expect(output.stderr.split(separator: "\n").count == 1 && output.stderr.hasSuffix("\n"))
        #expect(output.stdout.isEmpty)
    }

    /// Attached, tcptop keeps only what reading needs, in every thread, and its table stays exact.
    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func keepsOnlyWhatReadingNeedsAfterAttach() throws {
        let top = try TcptopRun(["-C", "-r", allRows, "1", "2"])
        try top.waitForTracing()
        let pid = top.process.processIdentifier
        let expected: UInt64 = CapabilityTests.expectedKept == "none" ? 0 : 1 << 39
        for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            for field in ["CapEff", "CapPrm", "CapBnd"] { #expect(capabilityField(status, field) == expected, "\(field)") }
            for field in ["CapInh", "CapAmb"] { #expect(capabilityField(status, field) == 0, "\(field)") }
        }
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-capcli", serverName: "tt-capsrv",
                                                 clientSends: 300 * 1024, serverSends: 200 * 1024 + 1000, seed: 9)
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        try expectExchange(exchange, in: output)
    }

    /// -R over the delay line: the client's RETRANS summed over the intervals
    /// is the kernel's own tcpi_total_retrans, its last RTT_MS within 10% of
    /// tcpi_rtt; the server, whose data was never dropped, shows 0.
    @Test(.enabled(if: runningAsRoot && FileManager.default.fileExists(atPath: "/dev/net/tun"), "needs root and /dev/net/tun"))
    func retransColumnsShowTheKernelsOwnCounts() throws {
        let line = try DelayLine(["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data", "--drop-side", "a", "--seed", "5"])
        let top = try TcptopRun(["-C", "-R", "-r", allRows, "1", "5"])
        try top.waitForTracing()
        let server = try LinePeer(["serve", "--name", "tt-r-srv", "--address", DelayLine.serverAddress,
                                   "--receive", "\(1 << 20)", "--send", "1"], hold: true, netns: line.serverNamespace)
        let (serverPID, port) = try server.readReady()
        let client = try LinePeer(["connect", "--name", "tt-r-cli", "--address", DelayLine.serverAddress, "--port", "\(port)",
                                   "--send", "\(1 << 20)", "--receive", "1", "--tcp-info"], hold: true, netns: line.clientNamespace)
        let (clientPID, _) = try client.readReady()
        let info = DelayLineTests.fields(try client.readLine(timeout: 60))
        try client.waitFor("HOLDING")
        try top.waitForIntervals(top.intervalsSoFar + 2)  // an interval ended with the connection open and idle
        client.release()
        server.release()
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        let retransmits = try #require(info["total_retrans"]), rtt = try #require(info["rtt_us"])
        #expect(retransmits > 0)
        let rows = output.lines.map { $0.split(separator: " ") }.filter { $0.count == 8 }
        let clientRows = rows.filter { $0[0] == "\(clientPID)" }, serverRows = rows.filter { $0[0] == "\(serverPID)" }
        try #require(!clientRows.isEmpty && !serverRows.isEmpty, "rows in:\n\(output.stdout)")
        #expect(clientRows.compactMap { Int($0[6]) }.reduce(0, +) == retransmits, "kernel: \(retransmits), rows: \(clientRows)")
        #expect(serverRows.allSatisfy { $0[6] == "0" }, "\(serverRows)")
        let shown = try #require(Double(clientRows.last![7]), "\(clientRows)")
        #expect(abs(shown * 1000 - Double(rtt)) <= 0.1 * Double(rtt), "RTT_MS \(shown), tcpi_rtt \(rtt) µs")
        print("tcptop -R over the delay line: client rows \(clientRows.map { $0.joined(separator: " ") }), tcpi_total_retrans \(retransmits), tcpi_rtt \(rtt) µs")
    }

    /// -L: a connection held a second, then closed, gets a tcplife line per
    /// end in the interval it closed: its pid, ports, whole-life KB and a
    /// lifetime of the hold; the rows of the interval tables are unchanged.
    @Test(.enabled(if: runningAsRoot, "needs root for BPF"))
    func lifetimeLinesShowTheConnectionsThatClosed() throws {
        let top = try TcptopRun(["-C", "-L", "-r", allRows, "1", "4"])
        try top.waitForTracing()
        let server = try HeldPeer(["serve", "--family", "4", "--name", "tt-life-srv", "--receive", "3000", "--send", "5000"])
        let client = try HeldPeer(["connect", "--family", "4", "--name", "tt-life-cli", "--port", "\(server.ready.port)",
                                   "--send", "3000", "--receive", "5000"])
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        usleep(1_000_000)
        client.release()
        server.release()
        try client.waitFor("DONE")
        try server.waitFor("DONE")
        let output = try top.finish()
        #expect(output.status == 0, "stderr: \(output.stderr)")
        #expect(output.stdout.contains("PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS\n"))
        let lines = output.lines.map { $0.split(separator: " ") }.filter { $0.count == 9 }
        let clientLine = try #require(lines.first { $0[0] == "\(client.ready.pid)" }, "\(output.stdout)")
        let serverLine = try #require(lines.first { $0[0] == "\(server.ready.pid)" }, "\(output.stdout)")
        #expect(clientLine[1] == "tt-life-cl" && clientLine[5] == "\(server.ready.port)" && clientLine[6] == "2" && clientLine[7] == "4",
                "\(clientLine)")
        #expect(serverLine[3] == "\(server.ready.port)" && serverLine[6] == "4" && serverLine[7] == "2", "\(serverLine)")
        for line in [clientLine, serverLine] {
            let milliseconds = try #require(Double(line[8]), "\(line)")
            #expect(milliseconds >= 1000 && milliseconds < 5000, "\(line)")
        }
    }

    /// Both ends of the exchange: pid, name, addresses, KB summed over the intervals
    /// (a transfer may straddle two intervals; each interval rounds down).
    private func expectExchange(_ exchange: TrafficPeers.Exchange, in output: TcptopOutput) throws {
        let totals = output.totals()
        let host = exchange.loopback
        let client = TcptopOutput.RowKey(
            pid: exchange.clientPID, comm: exchange.clientName,
            local: "\(host):\(exchange.clientPort)", remote: "\(host):\(exchange.serverPort)")
        let server = TcptopOutput.RowKey(
            pid: exchange.serverPID, comm: exchange.serverName,
            local: "\(host):\(exchange.serverPort)", remote: "\(host):\(exchange.clientPort)")
        let clientKB = try #require(totals[client], "client row in:\n\(output.stdout)")
        let serverKB = try #require(totals[server], "server row in:\n\(output.stdout)")
        let sentKB = Int(exchange.clientSent / 1024), receivedKB = Int(exchange.serverSent / 1024)
        let rounding = (1 - output.intervals)...0
        #expect(rounding.contains(clientKB.tx - sentKB) && rounding.contains(clientKB.rx - receivedKB), "\(clientKB)")
        #expect(rounding.contains(serverKB.rx - sentKB) && rounding.contains(serverKB.tx - receivedKB), "\(serverKB)")
    }
}

/// The cgroup v2 mount point, from /proc/mounts (read to its end: a /proc
/// file has no size, and String(contentsOfFile:) stops after its first page).
let cgroup2Mount: String? = {
    let mounts = FileHandle(forReadingAtPath: "/proc/mounts").map { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self) } ?? ""
    for line in mounts.split(separator: "\n") {
        let fields: [Substring] = line.split(separator: " ")
        if fields.count > 2 && fields[2] == "cgroup2" { return String(fields[1]) }
    }
    return nil
}()

/// A running tcptop with its stdout read line by line; every wait is
/// bounded, and deinit ends a tcptop still running (SIGTERM, then SIGKILL).
final class TcptopRun {
    let process = ChildProcess()
    private let out = PipeReader(), err = PipeReader()

    init(_ arguments: [String], asNobody: Bool = false, environment: [String: String] = [:]) throws {
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if asNobody {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--", TcptopTests.binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: TcptopTests.binary)
            process.arguments = arguments
        }
        process.standardOutput = out.pipe
        process.standardError = err.pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit { Child.stop(process) }

    /// Waits (at most `timeout` seconds) for the first line; the tracer is
    /// attached (or the baseline fetched) by then. Fails at once, with
    /// tcptop's stderr, when it exits first.
    func waitForTracing(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        let arrived = PipeReader.read([out], until: deadline) { out.buffer.contains(UInt8(ascii: "\n")) }
        guard out.buffer.contains(UInt8(ascii: "\n")) else {
            throw failure(arrived ? "ended before its first line" : "printed no line within \(timeout) s")
        }
        let first = String(decoding: out.buffer.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        guard first.hasPrefix("Tracing... Output every") else { throw failure("printed \(first.debugDescription) first") }
    }

    /// Interval screens printed so far (each has a summary line unless -S).
    var intervalsSoFar: Int { TcptopOutput(status: 0, stdout: out.text, stderr: "").intervals }

    /// Waits (at most `timeout` seconds) until `count` interval screens are printed.
    func waitForIntervals(_ count: Int, timeout: Double = 15) throws {
        let deadline = Date().addingTimeInterval(timeout)
        _ = PipeReader.read([out], until: deadline) { intervalsSoFar >= count }
        guard intervalsSoFar >= count else {
            throw failure("printed \(intervalsSoFar) of \(count) intervals within \(timeout) s")
        }
    }

    /// Reads stdout and stderr to their end and waits for the exit, at most
    /// `timeout` seconds; past it, tcptop is ended and an error thrown.
    func finish(timeout: Double = 30) throws -> TcptopOutput {
        let deadline = Date().addingTimeInterval(timeout)
        guard PipeReader.read([out, err], until: deadline),
            Child.waitExit(process, timeout: max(0, deadline.timeIntervalSinceNow))
        else { throw failure("did not exit within \(timeout) s") }
        return TcptopOutput(status: process.terminationStatus, stdout: out.text, stderr: err.text)
    }

    /// Ends tcptop and describes what went wrong, with what it printed.
    private func failure(_ what: String) -> PeerError {
        Child.stop(process)
        _ = PipeReader.read([out, err], until: Date().addingTimeInterval(2))
        return PeerError(description: "tcptop \(process.arguments) \(what) (\(Child.ending(process))); "
                             + "stdout: \(out.text.debugDescription) stderr: \(err.text.debugDescription)")
    }
}

/// What a finished tcptop printed, read back into rows.
struct TcptopOutput {
    var status: Int32
    var stdout: String
    var stderr: String

    struct RowKey: Hashable, CustomStringConvertible {
        var pid: UInt32, comm: String, local: String, remote: String
        var description: String { "\(pid) \(comm) \(local) \(remote)" }
    }

    var lines: [Substring] { stdout.split(separator: "\n", omittingEmptySubsequences: false) }
    var summaryLines: Int { lines.filter { $0.contains(" loadavg: ") || $0.contains(" source: ") }.count }
    /// Screens printed (each has a summary line unless -S).
    var intervals: Int { summaryLines }

    /// KB per row, summed over the intervals.
    func totals() -> [RowKey: (rx: Int, tx: Int)] {
        var totals: [RowKey: (rx: Int, tx: Int)] = [:]
        for line in lines where !line.hasPrefix("PID ") {
            let fields = line.split(separator: " ")
            guard fields.count == 6, let pid = UInt32(fields[0]), let rx = Int(fields[4]), let tx = Int(fields[5]) else { continue }
            let key = RowKey(pid: pid, comm: String(fields[1]), local: String(fields[2]), remote: String(fields[3]))
            let sum = totals[key] ?? (0, 0)
            totals[key] = (sum.rx + rx, sum.tx + tx)
        }
        return totals
    }
}

/// A traffic peer run with --hold: after its transfer it keeps the
/// connection open until released.
final class HeldPeer {
    private let peer: LinePeer
    let ready: (pid: UInt32, port: UInt16)

    init(_ arguments: [String]) throws {
        peer = try LinePeer(arguments, hold: true)
        ready = try peer.readReady()
    }

    func waitFor(_ expected: String) throws { try peer.waitFor(expected) }
    func release() { peer.release() }
}
