import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore
import Testing

/// Connection outcomes and durations (sock:inet_sock_set_state) over the
/// delay line, on every plan the kernel allows: a connect to a closed port
/// is its process's `refused` end, one whose SYNs are dropped its `timeout`
/// end, both without a byte moved; a connection across 80 ms of round trip
/// connects in one round trip, and one held 3 s lives 2.5 to 5 s.
@Suite(.serialized, .enabled(if: runningAsRoot && FileManager.default.fileExists(atPath: "/dev/net/tun"),
                             "needs root, BPF, network namespaces and /dev/net/tun"))
struct LifecycleTests {
    /// The closed samples of the ends of `pids`, reading until all came (at
    /// most 15 s; a read hands each closed end over once).
    private func closedEnds(of pids: Set<UInt32>, in tracer: TCPTracer) throws -> [UInt32: ConnectionSample] {
        var ends: [UInt32: ConnectionSample] = [:]
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && ends.count < pids.count {
            for end in try tracer.read().connections where end.closed && pids.contains(end.id.pid) { ends[end.id.pid] = end }
            usleep(50_000)
        }
        return ends
    }

    private func closedEnd(of pid: UInt32, in tracer: TCPTracer) throws -> ConnectionSample? {
        try closedEnds(of: [pid], in: tracer)[pid]
    }

    @Test(arguments: KernelPlans.allowed)
    func failedConnectsAreTheirProcesssEndsWithTheReason(plan: KernelPlans.Combination) throws {
        let tracer = try TCPTracer.start(plan.options())
        try #require(tracer.seesStateChanges, "\(tracer.healthGaps)")
        // The one way an outcome may be missing: the kernel skipped the state
        // hook's run (nested on one CPU under the other suites' load), and says so.
        func stateHookMisses() -> UInt64 {
            tracer.programStats().filter { $0.name.hasSuffix("_state") }.map(\.missedRuns).reduce(0, +)
        }
        func expectReason(_ end: ConnectionSample, _ reason: String, missesBefore: UInt64) {
            if end.lifecycle.failureReason != reason {
                #expect(stateHookMisses() > missesBefore, "\(plan): \(end.lifecycle), and no run of the state hook was missed")
            }
        }
        // A closed port across the wire: the RST comes back, ECONNREFUSED.
        let refusing = try DelayLine(["--delay-ms", "40"])
        var misses = stateHookMisses()
        let refused = try LinePeer(["probe", "--name", "tt-lc-ref", "--address", DelayLine.serverAddress, "--port", "1",
                                    "--timeout", "10"], netns: refusing.clientNamespace)
        #expect(try refused.readLine(timeout: 15).hasPrefix("CONNECT result=ECONNREFUSED"))
        try refused.waitDone()
        let refusedEnd = try #require(try closedEnd(of: UInt32(refused.process.processIdentifier), in: tracer), "\(plan)")
        expectReason(refusedEnd, "refused", missesBefore: misses)
        #expect(refusedEnd.lifecycle.role == .client, "\(refusedEnd.lifecycle)")
        #expect(!refusedEnd.lifecycle.established && refusedEnd.sentBytes == 0 && refusedEnd.receivedBytes == 0)
        #expect(refusedEnd.labels.commText == "tt-lc-ref" && refusedEnd.labels.remotePort == 1 && refusedEnd.labels.localPort != 0,
                "\(refusedEnd.labels)")
        _ = try refusing.stop()

        // Every SYN dropped, one retry: ETIMEDOUT after about 3 s.
        let dropping = try DelayLine(["--delay-ms", "40", "--drop-percent", "100", "--drop-match", "syn", "--drop-side", "a"])
        try dropping.clientSysctl("net.ipv4.tcp_syn_retries=1")
        misses = stateHookMisses()
        let timedOut = try LinePeer(["probe", "--name", "tt-lc-tmo", "--address", DelayLine.serverAddress, "--port", "1",
                                     "--timeout", "20"], netns: dropping.clientNamespace)
        #expect(try timedOut.readLine(timeout: 25).hasPrefix("CONNECT result=ETIMEDOUT"))
        try timedOut.waitDone()
        let timedOutEnd = try #require(try closedEnd(of: UInt32(timedOut.process.processIdentifier), in: tracer), "\(plan)")
        expectReason(timedOutEnd, "timeout", missesBefore: misses)
        #expect(timedOutEnd.lifecycle.role == .client, "\(timedOutEnd.lifecycle)")
        #expect(timedOutEnd.lifecycle.connectMicroseconds == 0 && timedOutEnd.lifecycle.lifetimeMicroseconds == 0)
        _ = try dropping.stop()
    }

    /// Entries made before a byte moved (each connect's, each handshake's)
    /// take at most half the capacity: 1100 idle loopback connections (2200
    /// ends, more than storage_array's 2048 slots) with a capacity of 1024
    /// leave room, and an exchange after them is counted exactly, none of its
    /// bytes unattributed. (Room for the suites beside it too, whose sockets
    /// this tracer also counts: at a capacity of 64, an idle flood trickling
    /// bytes on 100 connections would fill it.)
    @Test(arguments: KernelPlans.allowed)
    func idleConnectionsCannotCrowdOutCountedBytes(plan: KernelPlans.Combination) throws {
        try raiseDescriptorLimit(atLeast: 3_000, for: "2200 idle ends")
        let tracer = try TCPTracer.start(plan.options(mapCapacity: 1024))
        try #require(tracer.seesStateChanges, "\(tracer.healthGaps)")
        let before = try tracer.read().unattributed
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0,
                                  sin_addr: in_addr(s_addr: UInt32(0x7f00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(bind(listener, $0, length) == 0 && listen(listener, 2048) == 0 && getsockname(listener, $0, &length) == 0)
            }
        }
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<1100 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
            }
            try #require(connected == 0, "connect: errno \(errno)")
            idle += [client, accept(listener, nil, nil)]
        }
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-lc-cap-c", serverName: "tt-lc-cap-s",
                                                 clientSends: 5000, serverSends: 700)
        let reading = try tracer.read()
        let ends = reading.connections.filter { $0.id.pid == exchange.clientPID || $0.id.pid == exchange.serverPID }
        #expect(ends.map(\.sentBytes).sorted() == [700, 5000], "\(plan): \(ends.map { ($0.labels.commText, $0.sentBytes) })")
        #expect(reading.unattributed.sentBytes == before.sentBytes, "\(plan): \(reading.unattributed.sentBytes - before.sentBytes) bytes unattributed")
    }

    @Test(arguments: KernelPlans.allowed)
    func connectTimeIsARoundTripAndLifetimeIsTheHold(plan: KernelPlans.Combination) throws {
        let tracer = try TCPTracer.start(plan.options())
        try #require(tracer.seesStateChanges, "\(tracer.healthGaps)")
        let line = try DelayLine(["--delay-ms", "40"])
        let server = try LinePeer(["serve", "--name", "tt-lc-srv", "--address", DelayLine.serverAddress,
                                   "--receive", "1000", "--send", "1000"], hold: true, netns: line.serverNamespace)
        let (serverPID, port) = try server.readReady()
        let client = try LinePeer(["connect", "--name", "tt-lc-cli", "--address", DelayLine.serverAddress, "--port", "\(port)",
                                   "--send", "1000", "--receive", "1000"], hold: true, netns: line.clientNamespace)
        let (clientPID, _) = try client.readReady()
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        // Open: both ends known, with their roles; no lifetime yet.
        let open = try tracer.read().connections
        let openClient = try #require(open.first { $0.id.pid == clientPID }, "\(plan)")
        let openServer = try #require(open.first { $0.id.pid == serverPID }, "\(plan)")
        #expect(openClient.lifecycle.role == .client && openClient.lifecycle.established, "\(openClient.lifecycle)")
        #expect(openServer.lifecycle.role == .server && openServer.lifecycle.established, "\(openServer.lifecycle)")
        #expect(openClient.lifecycle.lifetimeMicroseconds == 0 && openServer.lifecycle.lifetimeMicroseconds == 0)
        // SYN out, SYN-ACK back: one round trip of 80 ms.
        let connect = Double(openClient.lifecycle.connectMicroseconds) / 1e6
        #expect(connect > 0.072 && connect <= 0.1, "connect \(connect) s (plan \(plan))")
        #expect(openServer.lifecycle.connectMicroseconds == 0)
        usleep(3_000_000)  // the hold: 3 s established
        client.release()
        server.release()
        try client.waitDone()
        try server.waitDone()
        let closed = try closedEnds(of: [clientPID, serverPID], in: tracer)
        let closedClient = try #require(closed[clientPID], "\(plan)"), closedServer = try #require(closed[serverPID], "\(plan)")
        for end in [closedClient, closedServer] {
            let lifetime = Double(end.lifecycle.lifetimeMicroseconds) / 1e6
            #expect(lifetime > 2.5 && lifetime <= 5, "\(end.labels.commText) lived \(lifetime) s (plan \(plan))")
            #expect(end.sentBytes == 1000 && end.receivedBytes == 1000)
        }
        // The two ends' entries were freed by that read; a new end may take
        // one again (storage_array reuses the last freed slot first): it
        // carries nothing of theirs.
        let probe = try LinePeer(["probe", "--name", "tt-lc-again", "--address", DelayLine.serverAddress, "--port", "1",
                                  "--timeout", "10"], netns: line.clientNamespace)
        _ = try probe.readLine(timeout: 15)
        try probe.waitDone()
        let again = try #require(try closedEnd(of: UInt32(probe.process.processIdentifier), in: tracer), "\(plan)")
        #expect(!again.lifecycle.established && again.lifecycle.connectMicroseconds == 0
                && again.lifecycle.lifetimeMicroseconds == 0 && again.retransmittedSegments == 0, "\(plan): \(again.lifecycle)")
        _ = try line.stop()
        print("lifecycle (\(plan)): connect \(connect * 1000) ms, lifetimes \(Double(closedClient.lifecycle.lifetimeMicroseconds) / 1e6) s / \(Double(closedServer.lifecycle.lifetimeMicroseconds) / 1e6) s")
    }

    /// The daemon serves it: outcome counters per connection end and per
    /// view, and the histograms a view configures, with the samples in the
    /// right buckets (connect 80 ms: (0.05, 0.1]; held 3 s: (2.5, 5]); a
    /// refused connect counts for its process; promtool accepts the text.
    @Test func theDaemonServesOutcomesAndDurationHistograms() throws {
        let config = NSTemporaryDirectory() + "tcptop-lifecycle-\(getpid()).yml"
        try """
        views:
          - {prefix: tcptop}
          - prefix: tcptop_comm
            labels: [comm]
            connect_duration_buckets: [0.01, 0.05, 0.1, 0.5]
            connection_duration_buckets: [1, 2.5, 5, 10]
            rtt_buckets: [0.05, 0.1]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let daemon = try ExporterProcess(arguments: ["--config.file=\(config)"])
        try daemon.waitReady()
        let line = try DelayLine(["--delay-ms", "40"])
        let server = try LinePeer(["serve", "--name", "tt-lcd-srv", "--address", DelayLine.serverAddress,
                                   "--receive", "1000", "--send", "1000"], hold: true, netns: line.serverNamespace)
        let (_, port) = try server.readReady()
        let client = try LinePeer(["connect", "--name", "tt-lcd-cli", "--address", DelayLine.serverAddress, "--port", "\(port)",
                                   "--send", "1000", "--receive", "1000"], hold: true, netns: line.clientNamespace)
        let (clientPID, _) = try client.readReady()
        let refused = try LinePeer(["probe", "--name", "tt-lcd-ref", "--address", DelayLine.serverAddress, "--port", "1",
                                    "--timeout", "10"], netns: line.clientNamespace)
        #expect(try refused.readLine(timeout: 15).hasPrefix("CONNECT result=ECONNREFUSED"))
        try refused.waitDone()
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        usleep(3_000_000)
        client.release()
        server.release()
        try client.waitDone()
        try server.waitDone()
        // Closed ends are handed over at the next read; each scrape reads the kernel.
        func value(_ samples: [ParsedSample], _ name: String, _ match: [String: String]) -> Double? {
            samples.first { sample in sample.name == name && match.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
        }
        var samples: [ParsedSample] = []
        let deadline = Date().addingTimeInterval(10)
        repeat {
            let reply = try daemon.get()
            samples = try ExpositionParser.parse(String(decoding: reply.body, as: UTF8.self))
            if value(samples, "tcptop_comm_connection_duration_seconds_count", ["comm": "tt-lcd-srv"]) == 1
                && value(samples, "tcptop_comm_connection_duration_seconds_count", ["comm": "tt-lcd-cli"]) == 1 {
                try expectPromtoolAccepts(reply.body)
                break
            }
            usleep(100_000)
        } while Date() < deadline
        let clientEnd = ["pid": "\(clientPID)", "comm": "tt-lcd-cli"]
        #expect(value(samples, "tcptop_connections_opened_total", clientEnd.merging(["role": "client"]) { $1 }) == 1)
        #expect(value(samples, "tcptop_connections_established_total", clientEnd) == 1)
        #expect(value(samples, "tcptop_connections_closed_total", clientEnd) == 1)
        #expect(value(samples, "tcptop_comm_connections_opened_total", ["comm": "tt-lcd-srv", "role": "server"]) == 1)
        #expect(value(samples, "tcptop_comm_connect_failures_total", ["comm": "tt-lcd-ref", "reason": "refused"]) == 1)
        #expect(value(samples, "tcptop_connect_failures_total", ["comm": "tt-lcd-ref", "reason": "refused"]) == 1)
        // One connect of one round trip (80 ms): in (0.05, 0.1].
        let connect = ["comm": "tt-lcd-cli"]
        #expect(value(samples, "tcptop_comm_connect_duration_seconds_bucket", connect.merging(["le": "0.05"]) { $1 }) == 0)
        #expect(value(samples, "tcptop_comm_connect_duration_seconds_bucket", connect.merging(["le": "0.1"]) { $1 }) == 1)
        #expect(value(samples, "tcptop_comm_connect_duration_seconds_count", connect) == 1)
        for comm in ["tt-lcd-cli", "tt-lcd-srv"] {
            #expect(value(samples, "tcptop_comm_connection_duration_seconds_bucket", ["comm": comm, "le": "2.5"]) == 0, "\(comm)")
            #expect(value(samples, "tcptop_comm_connection_duration_seconds_bucket", ["comm": comm, "le": "5"]) == 1, "\(comm)")
            #expect(value(samples, "tcptop_comm_connection_rtt_seconds_bucket", ["comm": comm, "le": "0.1"]) == 1, "\(comm)")
        }
        // The per-connection view has no histograms: none configured.
        #expect(!samples.contains { $0.name.hasPrefix("tcptop_connect_duration_seconds") })
        _ = try line.stop()
    }
}
