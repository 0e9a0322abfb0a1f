import Foundation
import Testing
import TCPTopCore

/// Timings, not assertions about speed (those would be flaky on shared CI):
/// run with `TCPTOP_BENCH=1 swift test -c release --filter PerformanceTests`.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["TCPTOP_BENCH"] != nil))
struct PerformanceTests {
    @Test(arguments: [100_000, 1_000_000])
    func renderTime(connections: Int) {
        let registry = ConnectionRegistry(
            views: [ViewConfig(), ViewConfig(prefix: "by_comm", labels: [.comm])], closedRetention: 300)
        let samples = (0..<connections).map { index -> ConnectionSample in
            let laddr = "10.0.\(index / 65536 % 256).\(index / 256 % 256)"
            return sample(
                cookie: UInt64(index), pid: UInt32(index % 30_000), comm: "worker-\(index % 50)",
                laddr: laddr, lport: UInt16(index % 60_000 + 1),
                sent: UInt64(index) * 1_000_003, received: UInt64(index))
        }
        let clock = ContinuousClock()
        let insert = clock.measure { registry.update(with: samples, now: 0) }
        let reread = clock.measure { registry.update(with: samples, now: 1) }
        var writer = ExpositionWriter()
        let render = clock.measure { registry.render(into: &writer) }
        print("\(connections) connections: insert \(insert), full re-read \(reread), render \(render), \(writer.bytes.count) bytes")
        #expect(registry.viewStatistics.map(\.series) == [connections, 50])
    }
}
