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
        // A closed port across the wire: the RST comes back, ECONNREFUSED.
        let refusing = try DelayLine(["--delay-ms", "40"])
        let refused = try LinePeer(["probe", "--name", "tt-lc-ref", "--address", DelayLine.serverAddress, "--port", "1",
                                    "--timeout", "10"], netns: refusing.clientNamespace)
        #expect(try refused.readLine(timeout: 15).hasPrefix("CONNECT result=ECONNREFUSED"))
        try refused.waitDone()
        let refusedEnd = try #require(try closedEnd(of: UInt32(refused.process.processIdentifier), in: tracer), "\(plan)")
        #expect(refusedEnd.lifecycle.failureReason == "refused" && refusedEnd.lifecycle.role == .client, "\(refusedEnd.lifecycle)")
        #expect(!refusedEnd.lifecycle.established && refusedEnd.sentBytes == 0 && refusedEnd.receivedBytes == 0)
        #expect(refusedEnd.labels.commText == "tt-lc-ref" && refusedEnd.labels.remotePort == 1 && refusedEnd.labels.localPort != 0,
                "\(refusedEnd.labels)")
        _ = try refusing.stop()

        // Every SYN dropped, one retry: ETIMEDOUT after about 3 s.
        let dropping = try DelayLine(["--delay-ms", "40", "--drop-percent", "100", "--drop-match", "syn", "--drop-side", "a"])
        try dropping.clientSysctl("net.ipv4.tcp_syn_retries=1")
        let timedOut = try LinePeer(["probe", "--name", "tt-lc-tmo", "--address", DelayLine.serverAddress, "--port", "1",
                                     "--timeout", "20"], netns: dropping.clientNamespace)
        #expect(try timedOut.readLine(timeout: 25).hasPrefix("CONNECT result=ETIMEDOUT"))
        try timedOut.waitDone()
        let timedOutEnd = try #require(try closedEnd(of: UInt32(timedOut.process.processIdentifier), in: tracer), "\(plan)")
        #expect(timedOutEnd.lifecycle.failureReason == "timeout" && timedOutEnd.lifecycle.role == .client, "\(timedOutEnd.lifecycle)")
        #expect(timedOutEnd.lifecycle.connectMicroseconds == 0 && timedOutEnd.lifecycle.lifetimeMicroseconds == 0)
        _ = try dropping.stop()
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
        _ = try line.stop()
        print("lifecycle (\(plan)): connect \(connect * 1000) ms, lifetimes \(Double(closedClient.lifecycle.lifetimeMicroseconds) / 1e6) s / \(Double(closedServer.lifecycle.lifetimeMicroseconds) / 1e6) s")
    }
}
