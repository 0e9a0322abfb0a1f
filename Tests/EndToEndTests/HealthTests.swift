import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore
import Testing

/// TCP health against the kernel's own per-socket facts, over the delay
/// line (a real wire between two network namespaces): every read path the
/// kernel allows counts the client's retransmitted segments exactly as its
/// TCP_INFO does (tcpi_total_retrans), and shows its smoothed RTT within
/// 10% of tcpi_rtt, while the connection is open and after it closed.
@Suite(.serialized, .enabled(if: runningAsRoot && FileManager.default.fileExists(atPath: "/dev/net/tun"),
                             "needs root, BPF, network namespaces and /dev/net/tun"))
struct HealthTests {
    /// `oneSend`: the megabyte in one send call, which blocks while its
    /// segments are lost and sent again: those retransmits come before the
    /// first byte is counted, on a socket without an owner yet (a pending
    /// owner entry keeps them for the sender).
    @Test(arguments: KernelPlans.allowed, [false, true])
    func retransmitsAndRTTMatchTheKernelsOwnPerSocketFacts(plan: KernelPlans.Combination, oneSend: Bool) throws {
        let tracer = try TCPTracer.start(plan.options())
        try #require(tracer.countsRetransmits, "\(tracer.healthGaps)")
        let line = try DelayLine(["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data",
                                  "--drop-side", "a", "--seed", "7"])
        let size = 1 << 20
        let server = try LinePeer(["serve", "--name", "tt-h-srv", "--address", DelayLine.serverAddress,
                                   "--receive", "\(size)", "--send", "1"], hold: true, netns: line.serverNamespace)
        let (serverPID, port) = try server.readReady()
        let client = try LinePeer(["connect", "--name", "tt-h-cli", "--address", DelayLine.serverAddress,
                                   "--port", "\(port)", "--send", "\(size)", "--receive", "1", "--tcp-info"]
                                   + (oneSend ? ["--chunk", "\(size)"] : []),
                                  hold: true, netns: line.clientNamespace)
        let (clientPID, _) = try client.readReady()
        // Printed once the server's byte came back: by then every client
        // segment was acknowledged, so the count is final.
        let info = DelayLineTests.fields(try client.readLine(timeout: 60))
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        let kernelRetransmits = try #require(info["total_retrans"]), kernelRTT = try #require(info["rtt_us"])
        #expect(kernelRetransmits > 0, "3% of the client's data dropped: some segments must be sent again")

        func check(_ samples: [ConnectionSample], closed: Bool) throws {
            let clientEnd = try #require(samples.first { $0.id.pid == clientPID }, "\(plan): no client end")
            let serverEnd = try #require(samples.first { $0.id.pid == serverPID }, "\(plan): no server end")
            #expect(clientEnd.closed == closed && clientEnd.sentBytes == UInt64(size))
            #expect(clientEnd.retransmittedSegments == UInt64(kernelRetransmits),
                    "\(plan): \(clientEnd.retransmittedSegments) counted, the kernel says \(kernelRetransmits)")
            #expect(serverEnd.retransmittedSegments == 0, "\(plan): only client data was dropped")
            let rtt = Double(clientEnd.smoothedRTTMicroseconds)
            #expect(abs(rtt - Double(kernelRTT)) <= 0.1 * Double(kernelRTT),
                    "\(plan): RTT \(rtt) µs, the kernel's tcpi_rtt \(kernelRTT) µs")
        }
        try check(tracer.read().connections, closed: false)
        client.release()
        server.release()
        try client.waitDone()
        try server.waitDone()
        // The sockets are destroyed once their FINs crossed the wire (a
        // round trip or two, 80 ms each): read until both ends are final.
        let deadline = Date().addingTimeInterval(10)
        var final: [ConnectionSample] = []
        while Date() < deadline {
            final += try tracer.read().connections.filter { $0.closed && ($0.id.pid == clientPID || $0.id.pid == serverPID) }
            if Set(final.map(\.id.pid)).count == 2 { break }
            usleep(50_000)
        }
        try check(final, closed: true)
        let stats = try line.stop()
        print("health over the delay line (\(plan)\(oneSend ? ", one send call" : "")): \(kernelRetransmits) retransmits (kernel) for \(stats.droppedAB) drops, tcpi_rtt \(kernelRTT) µs")
    }

    /// The daemon serves it: the client's series of the per-connection view
    /// and of a view by process name carry the kernel's own retransmit
    /// count and an RTT within 10% of tcpi_rtt; the text passes promtool.
    @Test func theDaemonServesRetransmitsAndRTTPerConnectionEndAndPerView() throws {
        let config = NSTemporaryDirectory() + "tcptop-health-\(getpid()).yml"
        try """
        views:
          - {prefix: tcptop}
          - {prefix: tcptop_comm, labels: [comm]}
        """.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let daemon = try ExporterProcess(arguments: ["--config.file=\(config)"])
        try daemon.waitReady()
        let line = try DelayLine(["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data",
                                  "--drop-side", "a", "--seed", "9"])
        let server = try LinePeer(["serve", "--name", "tt-hd-srv", "--address", DelayLine.serverAddress,
                                   "--receive", "\(1 << 20)", "--send", "1"], hold: true, netns: line.serverNamespace)
        let (_, port) = try server.readReady()
        let client = try LinePeer(["connect", "--name", "tt-hd-cli", "--address", DelayLine.serverAddress,
                                   "--port", "\(port)", "--send", "\(1 << 20)", "--receive", "1", "--tcp-info"],
                                  hold: true, netns: line.clientNamespace)
        let (clientPID, _) = try client.readReady()
        let info = DelayLineTests.fields(try client.readLine(timeout: 60))
        try client.waitFor("HOLDING")
        try server.waitFor("HOLDING")
        let retransmits = try #require(info["total_retrans"]), rtt = try #require(info["rtt_us"])
        let reply = try daemon.get()
        try expectPromtoolAccepts(reply.body)
        let samples = try ExpositionParser.parse(String(decoding: reply.body, as: UTF8.self))
        func value(_ name: String, _ match: [String: String]) -> Double? {
            samples.first { sample in sample.name == name && match.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
        }
        let end = ["pid": "\(clientPID)", "comm": "tt-hd-cli"]
        #expect(value("tcptop_retransmitted_segments_total", end) == Double(retransmits), "kernel: \(retransmits)")
        #expect(value("tcptop_comm_retransmitted_segments_total", ["comm": "tt-hd-cli"]) == Double(retransmits))
        for name in ["tcptop_rtt_seconds", "tcptop_comm_rtt_seconds"] {
            let shown = try #require(value(name, name == "tcptop_rtt_seconds" ? end : ["comm": "tt-hd-cli"]), "\(name)")
            #expect(abs(shown * 1e6 - Double(rtt)) <= 0.1 * Double(rtt), "\(name) \(shown) s, tcpi_rtt \(rtt) µs")
        }
        #expect(samples.contains { $0.name == "tcptop_unattributed_retransmitted_segments_total" })
        client.release()
        server.release()
        try client.waitDone()
        try server.waitDone()
        print("daemon over the delay line: tcptop_retransmitted_segments_total \(value("tcptop_retransmitted_segments_total", end) ?? -1) (kernel \(retransmits)), tcptop_rtt_seconds \(value("tcptop_rtt_seconds", end) ?? -1) (tcpi_rtt \(rtt) µs)")
    }
}
