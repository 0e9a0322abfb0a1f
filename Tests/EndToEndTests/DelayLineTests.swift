import Foundation
import Glibc
import TestChildProcess
import Testing

/// The delay line is a real wire for the kernel's TCP: its delay shows in
/// the kernel's own RTT, its drops in the kernel's own retransmit count,
/// and connect outcomes (refused, timed out) cross it as on a network.
/// Infrastructure for TCP-health tests; no exporter runs here.
@Suite(.serialized, .enabled(if: runningAsRoot && FileManager.default.fileExists(atPath: "/dev/net/tun"),
                             "needs root, network namespaces and /dev/net/tun"))
struct DelayLineTests {
    @Test func delayAndClientDataLossShowInTheKernelsRTTAndRetransmits() throws {
        let line = try DelayLine(["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data",
                                  "--drop-side", "a", "--seed", "11"])
        let size = 4 << 20
        let server = try LinePeer(["serve", "--name", "tt-dl-s", "--address", DelayLine.serverAddress,
                                   "--receive", "\(size)", "--send", "1"], netns: line.serverNamespace)
        let (_, port) = try server.readReady()
        let started = Date()
        let client = try LinePeer(["connect", "--name", "tt-dl-c", "--address", DelayLine.serverAddress,
                                   "--port", "\(port)", "--send", "\(size)", "--receive", "1", "--tcp-info"],
                                  netns: line.clientNamespace)
        _ = try client.readReady()
        let info = try client.readLine(timeout: 60)
        let seconds = Date().timeIntervalSince(started)
        try client.waitDone()
        try server.waitDone()
        let stats = try line.stop()
        let fields = Self.fields(info)
        let rtt = try #require(fields["rtt_us"], "\(info)"), retransmits = try #require(fields["total_retrans"], "\(info)")
        print("delay line 40 ms each way, 3% of client data dropped: 4 MiB in \(String(format: "%.2f", seconds)) s, "
              + "tcpi_rtt \(Double(rtt) / 1000) ms, tcpi_total_retrans \(retransmits), \(stats)")
        #expect(abs(Double(rtt) - 80_000) <= 8_000, "tcpi_rtt \(rtt) µs")
        #expect(retransmits > 0)
        // Every drop is a client data segment, so each one is resent at least once.
        #expect(stats.droppedAB > 0 && stats.droppedBA == 0 && retransmits >= stats.droppedAB, "\(stats)")
        // About 3% of at least the 2,897 full segments 4 MiB needs.
        #expect(stats.forwardedAB >= size / 1448 && stats.overflow == 0, "\(stats)")
        let share = Double(stats.droppedAB) / Double(stats.droppedAB + stats.forwardedAB)
        #expect(share > 0.01 && share < 0.05, "dropped share \(share)")
    }

    @Test func aConnectToAClosedPortAcrossItIsRefused() throws {
        let line = try DelayLine(["--delay-ms", "40"])
        let probe = try LinePeer(["probe", "--name", "tt-dl-p", "--address", DelayLine.serverAddress, "--port", "1",
                                  "--timeout", "10"], netns: line.clientNamespace)
        let result = try probe.readLine(timeout: 15)
        try probe.waitDone()
        let stats = try line.stop()
        print("closed port across the delay line: \(result), \(stats)")
        #expect(result.hasPrefix("CONNECT result=ECONNREFUSED"), "\(result)")
        // The refusal took the round trip: SYN over, RST back.
        let seconds = try #require(Double(result.split(separator: "=").last.map(String.init) ?? ""), "\(result)")
        #expect(seconds >= 0.08 && seconds < 1, "\(result)")
        #expect(stats.forwardedAB >= 1 && stats.forwardedBA >= 1, "\(stats)")
    }

    @Test func aConnectWhoseSYNsAreDroppedTimesOutWithOneRetry() throws {
        let line = try DelayLine(["--delay-ms", "40", "--drop-percent", "100", "--drop-match", "syn", "--drop-side", "a"])
        try line.clientSysctl("net.ipv4.tcp_syn_retries=1")
        let probe = try LinePeer(["probe", "--name", "tt-dl-p", "--address", DelayLine.serverAddress, "--port", "1",
                                  "--timeout", "20"], netns: line.clientNamespace)
        let result = try probe.readLine(timeout: 25)
        try probe.waitDone()
        let stats = try line.stop()
        print("SYNs dropped, tcp_syn_retries=1: \(result), \(stats)")
        #expect(result.hasPrefix("CONNECT result=ETIMEDOUT"), "\(result)")
        // One retry: the SYN at 0 s, again at 1 s, given up near 3 s (not the host's 6 retries, ~127 s).
        let seconds = try #require(Double(result.split(separator: "=").last.map(String.init) ?? ""), "\(result)")
        #expect(seconds >= 2.5 && seconds < 10, "\(result)")
        #expect(stats.droppedAB >= 2 && stats.droppedBA == 0, "\(stats)")
    }

    @Test func badOptionsGetOneLineAndStatus2() throws {
        let tool = try DelayLine.tool.get()
        for arguments in [["--ns-a", "x", "--ns-b", "y", "--drop-percent", "101"], ["--ns-a", "x"],
                          ["--ns-a", "x", "--ns-b", "y", "--drop-match", "some"]] {
            let process = ChildProcess(), errors = PipeReader()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
            process.standardError = errors.pipe
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let said = errors.rest(timeout: 5)
            #expect(Child.waitExit(process, timeout: 5) && process.terminationStatus == 2, "\(arguments)")
            #expect(said.hasPrefix("delayline: ") || said.hasPrefix("usage: delayline"), "\(said)")
            #expect(said.split(separator: "\n").count == 1, "\(said)")
        }
    }

    static func fields(_ line: String) -> [String: Int] {
        var fields: [String: Int] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let pair = part.split(separator: "=")
            if pair.count == 2 { fields[String(pair[0])] = Int(pair[1]) }
        }
        return fields
    }
}
