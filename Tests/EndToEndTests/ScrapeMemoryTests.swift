import Foundation
import Glibc
import Testing
import TCPTopHTTP

/// Clients that ask for /metrics and never read: each holds a worker (the
/// limit covers the whole response) but not the whole text, which is
/// rendered as it is written.
@Suite(.serialized) struct ScrapeMemoryTests {
    @Test func clientsThatNeverReadHoldNoWholeText() throws {
        let config = try writeConfig("web:\n  max_requests: 20\n  write_timeout: 20s\nconnections:\n  closed_retention: 1h\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", config])
        try daemon.waitReady()
        // 6,000 closed connections: 12,000 series of distinct ports.
        let churn = try LoopbackChurn()
        for _ in 0..<6_000 { try churn.once() }
        let text = try daemon.get().body
        #expect(text.count > 2_000_000, "only \(text.count) bytes of text")
        _ = try daemon.get()  // the second scrape's buffers are the steady state
        let before = try residentBytes(daemon.process.processIdentifier)

        // As many stuck clients as workers: a tiny receive buffer, a request, no read.
        var stuck: [HTTPClientConnection] = []
        var options = HTTPClient.Options()
        options.receiveBufferBytes = 4096
        for _ in 0..<20 {
            let connection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: daemon.port)
            try connection.send("GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            stuck.append(connection)
        }
        // Every worker is taken once a further request gets 503.
        let deadline = Date().addingTimeInterval(10)
        var status = 0
        while Date() < deadline {
            status = try daemon.get().status
            if status == 503 { break }
            usleep(50_000)
        }
        #expect(status == 503, "the 21st request got \(status), not 503: the stuck responses do not hold their workers")
        // Scrapes run one at a time (each reads the kernel): give all 20 the
        // time to render and fill their sockets, and keep the highest RSS seen.
        var during = 0
        for _ in 0..<30 {
            during = max(during, try residentBytes(daemon.process.processIdentifier))
            usleep(100_000)
        }
        let growth = during - before
        print("20 stuck scrapes of \(text.count / 1024) KiB each: RSS \(before >> 20) → \(during >> 20) MiB (+\(growth >> 10) KiB)")
        // Holding each text would be 20 × the text; streamed, each holds a
        // piece and a snapshot of the sums (here ~8 MiB in all). The bound:
        // half of one text each, as the daemon also counts the sockets of
        // the suites running beside this one, and its registry grows with them.
        #expect(growth < 20 * text.count / 2, "RSS grew by \(growth) bytes with 20 stuck clients of \(text.count)-byte scrapes")
        withExtendedLifetime(stuck) {}
    }

    private func residentBytes(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ")[1]) else { throw PeerError(description: "no VmRSS for \(pid)") }
        return kib * 1024
    }
}
