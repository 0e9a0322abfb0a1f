import Foundation
import Testing
import TCPTopCore

/// The TCP health families: retransmitted segments summed like the bytes,
/// the smoothed RTT as the highest of a series' open members.
@Suite struct RegistryHealthTests {
    let retention = 60.0
    let views = [
        ViewConfig(),
        ViewConfig(prefix: "comm", labels: [.comm]),
        ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 1),
        ViewConfig(prefix: "total", labels: []),
    ]

    private func end(_ id: UInt64, _ comm: String, retransmits: UInt64, rtt: UInt32, closed: Bool = false) -> ConnectionSample {
        sample(cookie: id, pid: UInt32(id), comm: comm, lport: UInt16(id), sent: 1, received: 1, closed: closed,
               retransmits: retransmits, rtt: rtt)
    }

    private func connection(_ id: UInt64, _ comm: String) -> String {
        #"{pid="\#(id)",comm="\#(comm)",family="ipv4",laddr="10.0.0.1",lport="\#(id)",raddr="10.0.0.2",rport="443"}"#
    }

    private func retransmits(_ registry: ConnectionRegistry) -> [String: UInt64] {
        renderedValues(registry, families: ["_retransmitted_segments_total"])
    }

    /// Each view's retransmit series sum to the per-connection view's.
    private func expectViewsSumAlike(_ registry: ConnectionRegistry, sourceLocation: SourceLocation = #_sourceLocation) {
        let values = retransmits(registry)
        func sum(_ prefix: String) -> UInt64 { values.filter { $0.key.hasPrefix(prefix + "_") }.values.reduce(0, +) }
        for prefix in ["comm", "capped", "total"] {
            #expect(sum(prefix) == sum("tcptop"), "view \(prefix)", sourceLocation: sourceLocation)
        }
    }

    @Test func viewsSumRetransmitsAndTakeTheHighestOpenRTTThroughClosesAndExpiry() {
        let registry = ConnectionRegistry(views: views, closedRetention: retention)
        registry.update(with: [
            end(1, "a", retransmits: 5, rtt: 10_000),
            end(2, "a", retransmits: 7, rtt: 30_000),
            end(3, "b", retransmits: 11, rtt: 0),  // no RTT sample yet
            end(4, "c", retransmits: 13, rtt: 20_000),
        ], now: 0)
        var expected: [String: UInt64] = [
            "tcptop_retransmitted_segments_total" + connection(1, "a"): 5,
            "tcptop_retransmitted_segments_total" + connection(2, "a"): 7,
            "tcptop_retransmitted_segments_total" + connection(3, "b"): 11,
            "tcptop_retransmitted_segments_total" + connection(4, "c"): 13,
            #"comm_retransmitted_segments_total{comm="a"}"#: 12,
            #"comm_retransmitted_segments_total{comm="b"}"#: 11,
            #"comm_retransmitted_segments_total{comm="c"}"#: 13,
            #"capped_retransmitted_segments_total{comm="a"}"#: 12,
            #"capped_retransmitted_segments_total{comm="__overflow__"}"#: 24,
            "total_retransmitted_segments_total": 36,
        ]
        #expect(retransmits(registry) == expected)
        #expect(renderedRTT(registry) == [
            "tcptop_rtt_seconds" + connection(1, "a"): "0.01",
            "tcptop_rtt_seconds" + connection(2, "a"): "0.03",
            "tcptop_rtt_seconds" + connection(4, "c"): "0.02",
            #"comm_rtt_seconds{comm="a"}"#: "0.03",
            #"comm_rtt_seconds{comm="c"}"#: "0.02",
            #"capped_rtt_seconds{comm="a"}"#: "0.03",
            #"capped_rtt_seconds{comm="__overflow__"}"#: "0.02",
            "total_rtt_seconds": "0.03",
        ])
        expectViewsSumAlike(registry)

        // 2 closes with a higher final count (its RTT no longer counts),
        // 4 is gone from the kernel (its last read's count is final), 3 gets an RTT.
        registry.update(with: [
            end(1, "a", retransmits: 6, rtt: 15_000),
            end(2, "a", retransmits: 9, rtt: 50_000, closed: true),
            end(3, "b", retransmits: 11, rtt: 40_000),
        ], now: 10)
        #expect(registry.liveEntries == 2)
        expected["tcptop_retransmitted_segments_total" + connection(1, "a")] = 6
        expected["tcptop_retransmitted_segments_total" + connection(2, "a")] = 9
        expected[#"comm_retransmitted_segments_total{comm="a"}"#] = 15
        expected[#"capped_retransmitted_segments_total{comm="a"}"#] = 15
        expected["total_retransmitted_segments_total"] = 39
        #expect(retransmits(registry) == expected)
        #expect(renderedRTT(registry) == [
            "tcptop_rtt_seconds" + connection(1, "a"): "0.015",
            "tcptop_rtt_seconds" + connection(3, "b"): "0.04",
            #"comm_rtt_seconds{comm="a"}"#: "0.015",
            #"comm_rtt_seconds{comm="b"}"#: "0.04",
            #"capped_rtt_seconds{comm="a"}"#: "0.015",
            #"capped_rtt_seconds{comm="__overflow__"}"#: "0.04",
            "total_rtt_seconds": "0.04",
        ])
        expectViewsSumAlike(registry)

        // Past the retention the closed ends' series expire; an aggregate
        // keeps their counts while it lives, the overflow series takes an
        // expired overflowed label set's ("c").
        registry.update(with: [end(1, "a", retransmits: 7, rtt: 15_000), end(3, "b", retransmits: 11, rtt: 40_000)],
                        now: 10 + retention)
        #expect(retransmits(registry) == [
            "tcptop_retransmitted_segments_total" + connection(1, "a"): 7,
            "tcptop_retransmitted_segments_total" + connection(3, "b"): 11,
            #"comm_retransmitted_segments_total{comm="a"}"#: 16,
            #"comm_retransmitted_segments_total{comm="b"}"#: 11,
            #"capped_retransmitted_segments_total{comm="a"}"#: 16,
            #"capped_retransmitted_segments_total{comm="__overflow__"}"#: 24,
            "total_retransmitted_segments_total": 40,
        ])
        #expect(registry.viewStatistics.map(\.overflowedLabelSets) == [0, 0, 1, 0])

        // Every end closes: no RTT sample is left, not even the family's header.
        registry.update(with: [], now: 20 + retention)
        #expect(renderedRTT(registry).isEmpty)
        #expect(!renderedText(registry).contains("_rtt_seconds"))
        #expect(retransmits(registry)["total_retransmitted_segments_total"] == 40)
        // A close is activity (counted in <prefix>_connections_closed_total): the series last the retention from it.
        registry.update(with: [], now: 20 + 2 * retention - 1)
        #expect(renderedText(registry).contains("total_connections_closed_total 4"))
        registry.update(with: [], now: 20 + 2 * retention)
        #expect(renderedText(registry).isEmpty)
    }

    @Test func retransmitsNeverGoBackwardsAndTheLatestRTTWins() {
        let registry = ConnectionRegistry(closedRetention: retention)
        let series = connection(1, "a")
        registry.update(with: [end(1, "a", retransmits: 5, rtt: 30_000)], now: 0)
        #expect(renderedRTT(registry) == ["tcptop_rtt_seconds" + series: "0.03"])
        registry.update(with: [end(1, "a", retransmits: 3, rtt: 10_000)], now: 1)  // a stale count, a lower RTT
        #expect(retransmits(registry) == ["tcptop_retransmitted_segments_total" + series: 5])
        #expect(renderedRTT(registry) == ["tcptop_rtt_seconds" + series: "0.01"])
        registry.update(with: [end(1, "a", retransmits: 8, rtt: 0)], now: 2)  // unknown again: no sample
        #expect(retransmits(registry) == ["tcptop_retransmitted_segments_total" + series: 8])
        #expect(renderedRTT(registry).isEmpty)
    }

    /// Retransmits alone are activity: the series lasts the retention from them.
    @Test func aRetransmitIsActivity() {
        let registry = ConnectionRegistry(closedRetention: retention)
        registry.update(with: [end(1, "a", retransmits: 0, rtt: 0)], now: 0)
        registry.update(with: [end(1, "a", retransmits: 2, rtt: 0, closed: true)], now: 50)  // same bytes
        registry.expire(now: 50 + retention - 1)
        #expect(retransmits(registry).values.sorted() == [2])
        registry.expire(now: 50 + retention)
        #expect(renderedText(registry).isEmpty)
    }

    @Test func theOverflowSeriesTakesTheHighestRTTOfItsOpenLabelSets() {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 1)],
                                          closedRetention: retention)
        registry.update(with: [
            end(1, "a", retransmits: 0, rtt: 90_000),
            end(2, "b", retransmits: 0, rtt: 20_000),
            end(3, "c", retransmits: 0, rtt: 70_000, closed: true),  // closed: its RTT is not shown
            end(4, "d", retransmits: 0, rtt: 0),
        ], now: 0)
        #expect(renderedRTT(registry) == [
            #"capped_rtt_seconds{comm="a"}"#: "0.09", #"capped_rtt_seconds{comm="__overflow__"}"#: "0.02",
        ])
        registry.update(with: [end(1, "a", retransmits: 0, rtt: 90_000), end(4, "d", retransmits: 0, rtt: 0)], now: 1)
        #expect(renderedRTT(registry) == [#"capped_rtt_seconds{comm="a"}"#: "0.09"])
    }

    @Test(arguments: [(80_812 as UInt32, "0.080812"), (1, "0.000001"), (100, "0.0001"), (1_000_000, "1"),
                      (1_500_000, "1.5"), (12_000_340, "12.00034"), (UInt32.max, "4294.967295")])
    func rttIsSecondsWithMicrosecondsAndNoExponent(microseconds: UInt32, text: String) {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "total", labels: [])], closedRetention: retention)
        registry.update(with: [end(1, "a", retransmits: 0, rtt: microseconds)], now: 0)
        #expect(renderedRTT(registry) == ["total_rtt_seconds": text])
    }

    @Test(arguments: [
        (HealthFamilies(), ["tcptop_sent_bytes_total", "tcptop_received_bytes_total"]),
        (.retransmits, ["tcptop_sent_bytes_total", "tcptop_received_bytes_total", "tcptop_retransmitted_segments_total"]),
        (.rtt, ["tcptop_sent_bytes_total", "tcptop_received_bytes_total", "tcptop_rtt_seconds"]),
        (.all, ["tcptop_sent_bytes_total", "tcptop_received_bytes_total", "tcptop_retransmitted_segments_total",
                "tcptop_rtt_seconds"]),
    ])
    func familiesWithoutAKernelHookAreLeftOut(health: HealthFamilies, families: [String]) {
        let registry = ConnectionRegistry(closedRetention: retention, health: health)
        registry.update(with: [end(1, "a", retransmits: 4, rtt: 1000), end(2, "b", retransmits: 0, rtt: 0)], now: 0)
        let text = renderedText(registry)
        let typed = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) }
        #expect(typed == families)
        let named = Set(renderedSamples(registry).keys.map { String($0.prefix { $0 != "{" }) })
        #expect(named == Set(families))
    }

    /// A read of a million ends holds a million samples: the RTT and retransmits
    /// cost 8 bytes (they share the labels' tail padding), the lifecycle 32.
    @Test func aSampleIs144BytesApart() {
        #expect(MemoryLayout<ConnectionSample>.stride == 144)
        #expect(MemoryLayout<ConnectionLifecycle>.stride == 32)
    }

    /// The whole text, every family and view, escaped labels and overflow included.
    @Test func promtoolAcceptsTheText() throws {
        let registry = ConnectionRegistry(views: views, closedRetention: retention)
        var odd = end(9, "x", retransmits: 3, rtt: 1)
        odd.labels.comm = [0x22, 0x5C, 0x0A, 0xFF]
        registry.update(with: [end(1, "a", retransmits: 5, rtt: 80_812), end(2, "b", retransmits: 0, rtt: 0),
                               end(3, "c", retransmits: 1, rtt: 4_000_000), odd], now: 0)
        let text = renderedText(registry)
        #expect(text.contains("_retransmitted_segments_total{") && text.contains("_rtt_seconds{"))
        let result = try promtoolCheckMetrics(text)
        #expect(result.status == 0, "promtool: \(result.output)")
    }
}

func renderedText(_ registry: ConnectionRegistry) -> String {
    var writer = ExpositionWriter()
    registry.render(into: &writer)
    return writer.text
}

/// Runs `promtool check metrics` on `text` (at most 30 s); its status and output.
func promtoolCheckMetrics(_ text: String) throws -> (status: Int32, output: String) {
    let file = NSTemporaryDirectory() + "tcptop-core-metrics-\(UInt32.random(in: 0...UInt32.max)).txt"
    try Data(text.utf8).write(to: URL(fileURLWithPath: file))
    defer { try? FileManager.default.removeItem(atPath: file) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
    process.arguments = ["check", "metrics"]
    process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    try process.run()
    if exited.wait(timeout: .now() + 30) == .timedOut {
        process.terminate()
        process.waitUntilExit()
        return (-1, "timed out after 30 s")
    }
    let printed = output.fileHandleForReading.readDataToEndOfFile()
    return (process.terminationStatus, String(decoding: printed, as: UTF8.self))
}
