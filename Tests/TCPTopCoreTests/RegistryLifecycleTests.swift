import Testing
import TCPTopCore

/// Connection outcomes (opened, established, failed connects, closed,
/// resets) counted once per connection end over reads that repeat them,
/// summed exactly by every view, overflow and expiry included; histograms.
@Suite struct RegistryLifecycleTests {
    let retention = 60.0
    let views = [
        ViewConfig(),
        ViewConfig(prefix: "comm", labels: [.comm]),
        ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 1),
        ViewConfig(prefix: "total", labels: []),
    ]
    static let outcomeFamilies = ["_connections_opened_total", "_connections_established_total", "_connect_failures_total",
                                  "_connections_closed_total", "_resets_total"]

    private func end(_ id: UInt64, _ comm: String, sent: UInt64 = 1, closed: Bool = false, rtt: UInt32 = 0,
                     _ lifecycle: ConnectionLifecycle) -> ConnectionSample {
        var end = sample(cookie: id, pid: UInt32(id), comm: comm, lport: UInt16(id), sent: sent, received: sent, closed: closed,
                         rtt: rtt)
        end.lifecycle = lifecycle
        return end
    }

    private func outcomes(_ registry: ConnectionRegistry, _ prefix: String) -> [String: UInt64] {
        renderedValues(registry, families: Self.outcomeFamilies).filter { $0.key.hasPrefix(prefix + "_") }
    }

    /// Every aggregate view's outcome samples, with their view's labels
    /// dropped, sum to the per-connection view's, family by family and by the extra label.
    private func expectViewsSumAlike(_ registry: ConnectionRegistry, sourceLocation: SourceLocation = #_sourceLocation) {
        func byFamilyAndExtra(_ prefix: String) -> [String: UInt64] {
            var sums: [String: UInt64] = [:]
            for (series, value) in outcomes(registry, prefix) {
                let name = series.prefix { $0 != "{" }.dropFirst(prefix.count)
                let extra = ["role=", "reason=", "direction="].compactMap { label -> String? in
                    guard let range = series.range(of: label) else { return nil }
                    return String(series[range.lowerBound...].prefix { $0 != "," && $0 != "}" })
                }.joined()
                sums[name + extra, default: 0] += value
            }
            return sums
        }
        let perConnection = byFamilyAndExtra("tcptop")
        for prefix in ["comm", "capped", "total"] {
            #expect(byFamilyAndExtra(prefix) == perConnection, "view \(prefix)", sourceLocation: sourceLocation)
        }
    }

    @Test func eachFactIsCountedOncePerEndAndEveryViewSumsAlike() {
        let registry = ConnectionRegistry(views: views, closedRetention: retention)
        // 1: a client connecting; 2: a server end, established; 3: opened
        // before the tracer (role unknown); 4: a refused connect, 0 bytes, closed.
        registry.update(with: [
            end(1, "a", sent: 0, ConnectionLifecycle(role: .client)),
            end(2, "a", ConnectionLifecycle(role: .server, established: true)),
            end(3, "b", ConnectionLifecycle(established: true)),
            end(4, "c", sent: 0, closed: true, ConnectionLifecycle(role: .client, connectError: 111)),
        ], now: 0)
        var total: [String: UInt64] = [
            #"total_connections_opened_total{role="client"}"#: 2,
            #"total_connections_opened_total{role="server"}"#: 1,
            "total_connections_established_total": 2,
            #"total_connect_failures_total{reason="refused"}"#: 1,
            "total_connections_closed_total": 1,
        ]
        #expect(outcomes(registry, "total") == total)
        #expect(outcomes(registry, "comm") == [
            #"comm_connections_opened_total{comm="a",role="client"}"#: 1,
            #"comm_connections_opened_total{comm="a",role="server"}"#: 1,
            #"comm_connections_opened_total{comm="c",role="client"}"#: 1,
            #"comm_connections_established_total{comm="a"}"#: 1,
            #"comm_connections_established_total{comm="b"}"#: 1,
            #"comm_connect_failures_total{comm="c",reason="refused"}"#: 1,
            #"comm_connections_closed_total{comm="c"}"#: 1,
        ])
        // The failed connect's series exists though it moved no byte.
        #expect(renderedValues(registry)[#"comm_sent_bytes_total{comm="c"}"#] == 0)
        expectViewsSumAlike(registry)

        // The same facts again, twice, plus 1 established with its connect
        // time and resets on 3 (max-monotonic: a stale lower read adds nothing).
        let established = ConnectionLifecycle(role: .client, established: true, connectMicroseconds: 1500)
        for round in 1...2 {
            registry.update(with: [
                end(1, "a", established),
                end(2, "a", ConnectionLifecycle(role: .server, established: true)),
                end(3, "b", ConnectionLifecycle(established: true, resetsSent: 1, resetsReceived: round == 1 ? 2 : 1)),
            ], now: Double(round))
        }
        total["total_connections_established_total"] = 3
        total[#"total_resets_total{direction="sent"}"#] = 1
        total[#"total_resets_total{direction="received"}"#] = 2
        #expect(outcomes(registry, "total") == total)
        expectViewsSumAlike(registry)

        // 1 closes (read live, then closed, in one read), 2 is gone from the
        // kernel (closed too), 3 receives one more reset.
        registry.update(with: [
            end(1, "a", established),
            end(1, "a", closed: true, ConnectionLifecycle(role: .client, established: true, connectMicroseconds: 1500,
                                                          lifetimeMicroseconds: 3_000_000, resetsSent: 1)),
            end(3, "b", ConnectionLifecycle(established: true, resetsSent: 1, resetsReceived: 3)),
        ], now: 3)
        total["total_connections_closed_total"] = 3
        total[#"total_resets_total{direction="sent"}"#] = 2
        total[#"total_resets_total{direction="received"}"#] = 3
        #expect(outcomes(registry, "total") == total)
        #expect(outcomes(registry, "capped") == [
            #"capped_connections_opened_total{comm="a",role="client"}"#: 1,
            #"capped_connections_opened_total{comm="a",role="server"}"#: 1,
            #"capped_connections_opened_total{comm="__overflow__",role="client"}"#: 1,
            #"capped_connections_established_total{comm="a"}"#: 2,
            #"capped_connections_established_total{comm="__overflow__"}"#: 1,
            #"capped_connect_failures_total{comm="__overflow__",reason="refused"}"#: 1,
            #"capped_connections_closed_total{comm="a"}"#: 2,
            #"capped_connections_closed_total{comm="__overflow__"}"#: 1,
            #"capped_resets_total{comm="a",direction="sent"}"#: 1,
            #"capped_resets_total{comm="__overflow__",direction="sent"}"#: 1,
            #"capped_resets_total{comm="__overflow__",direction="received"}"#: 3,
        ])
        expectViewsSumAlike(registry)

        // Past the retention the closed ends' series expire: the aggregates
        // keep their counts while they live (the overflow series takes the
        // expired "c"), and the per-connection view's sum is what is left.
        registry.update(with: [end(3, "b", ConnectionLifecycle(established: true, resetsSent: 1, resetsReceived: 3))],
                        now: 3 + retention)
        #expect(outcomes(registry, "total") == total)
        #expect(outcomes(registry, "capped")[#"capped_connect_failures_total{comm="__overflow__",reason="refused"}"#] == 1)
        #expect(outcomes(registry, "tcptop").count == 3)  // 3's established and resets
        #expect(registry.viewStatistics.map(\.overflowedLabelSets) == [0, 0, 1, 0])
    }

    @Test func resetsPastAByteStayExact() {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "total", labels: [])], closedRetention: retention)
        var step = 0.0
        for (sent, received) in [(200 as UInt32, 1 as UInt32), (254, 255), (300, 255), (299, 70_000), (UInt32.max, 70_001)] {
            registry.update(with: [end(1, "a", ConnectionLifecycle(resetsSent: sent, resetsReceived: received)),
                                   end(2, "b", ConnectionLifecycle(resetsSent: 3))], now: step)
            step += 1
            #expect(outcomes(registry, "total") == [
                #"total_resets_total{direction="sent"}"#: UInt64(max(sent, 300 * (step > 3 ? 1 : 0))) + 3,
                #"total_resets_total{direction="received"}"#: UInt64(received),
            ])
        }
        registry.update(with: [end(1, "a", closed: true, ConnectionLifecycle(resetsSent: UInt32.max, resetsReceived: 70_002))],
                        now: step)
        #expect(outcomes(registry, "total")[#"total_resets_total{direction="received"}"#] == 70_002)
    }

    @Test(arguments: [111 as Int32, 110, 104, -1, 113, 101, 99])
    func failureReasonsAreLabelValues(error: Int32) throws {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "total", labels: [])], closedRetention: retention)
        let failed = ConnectionLifecycle(role: .client, connectError: error)
        registry.update(with: [end(1, "a", sent: 0, failed), end(2, "b", sent: 0, failed)], now: 0)
        registry.update(with: [end(1, "a", sent: 0, failed)], now: 1)
        let reason = try #require(failed.failureReason)
        #expect(outcomes(registry, "total")[#"total_connect_failures_total{reason="\#(reason)"}"#] == 2)
        #expect(outcomes(registry, "total").keys.filter { $0.contains("failures") }.count == 1)
    }

    @Test func endsWithoutFactsAndKernelsWithoutHooksRenderNoOutcome() {
        let quiet = ConnectionRegistry(views: views, closedRetention: retention)
        quiet.update(with: [end(1, "a", ConnectionLifecycle())], now: 0)
        #expect(!renderedText(quiet).contains("_connections_") && !renderedText(quiet).contains("_resets_total"))

        let noHooks = ConnectionRegistry(
            views: [ViewConfig(prefix: "total", labels: [], connectDurationBuckets: [1], connectionDurationBuckets: [1])],
            closedRetention: retention, health: [.retransmits, .rtt])
        noHooks.update(with: [end(1, "a", closed: true, ConnectionLifecycle(
            role: .client, established: true, connectError: 111, connectMicroseconds: 5, lifetimeMicroseconds: 5,
            resetsSent: 1, resetsReceived: 1))], now: 0)
        #expect(renderedSamples(noHooks).keys.sorted()
            == ["total_received_bytes_total", "total_retransmitted_segments_total", "total_sent_bytes_total"])
    }

    // MARK: Histograms

    private let histogramView = ViewConfig(
        prefix: "total", labels: [], connectDurationBuckets: [0.001, 0.01, 0.1],
        connectionDurationBuckets: [0.5, 1, 2.5, 5, 10], rttBuckets: [0.01, 0.05])

    private func histogram(_ registry: ConnectionRegistry, _ name: String) -> [String: String] {
        renderedSamples(registry).filter { $0.key.hasPrefix(name + "_") }
    }

    @Test func histogramsCountEachEndOnceInItsBucket() {
        let registry = ConnectionRegistry(views: [histogramView, ViewConfig(prefix: "plain", labels: [])],
                                          closedRetention: retention)
        let connected = ConnectionLifecycle(role: .client, established: true, connectMicroseconds: 1500)
        let atBound = ConnectionLifecycle(role: .client, established: true, connectMicroseconds: 10_000)  // le="0.01" exactly
        registry.update(with: [end(1, "a", rtt: 20_000, connected), end(2, "b", rtt: 50_001, atBound),
                               end(3, "c", ConnectionLifecycle(role: .server, established: true))], now: 0)
        registry.update(with: [end(1, "a", rtt: 20_000, connected), end(2, "b", rtt: 50_001, atBound),
                               end(3, "c", ConnectionLifecycle(role: .server, established: true))], now: 1)
        #expect(histogram(registry, "total_connect_duration_seconds") == [
            #"total_connect_duration_seconds_bucket{le="0.001"}"#: "0",
            #"total_connect_duration_seconds_bucket{le="0.01"}"#: "2",
            #"total_connect_duration_seconds_bucket{le="0.1"}"#: "2",
            #"total_connect_duration_seconds_bucket{le="+Inf"}"#: "2",
            "total_connect_duration_seconds_sum": "0.0115",
            "total_connect_duration_seconds_count": "2",
        ])
        // No end closed yet: no lifetime or closing RTT, not even a header.
        #expect(!renderedText(registry).contains("total_connection_duration_seconds"))
        #expect(!renderedText(registry).contains("total_connection_rtt_seconds"))

        // 1 held 3 s; 2 gone from the kernel (lifetime unknown, its last RTT observed); 3 closes with 0.7 s.
        registry.update(with: [
            end(1, "a", closed: true, rtt: 20_000, ConnectionLifecycle(
                role: .client, established: true, connectMicroseconds: 1500, lifetimeMicroseconds: 3_000_000)),
            end(3, "c", closed: true, ConnectionLifecycle(role: .server, established: true, lifetimeMicroseconds: 700_000)),
        ], now: 2)
        #expect(histogram(registry, "total_connection_duration_seconds") == [
            #"total_connection_duration_seconds_bucket{le="0.5"}"#: "0",
            #"total_connection_duration_seconds_bucket{le="1"}"#: "1",
            #"total_connection_duration_seconds_bucket{le="2.5"}"#: "1",
            #"total_connection_duration_seconds_bucket{le="5"}"#: "2",
            #"total_connection_duration_seconds_bucket{le="10"}"#: "2",
            #"total_connection_duration_seconds_bucket{le="+Inf"}"#: "2",
            "total_connection_duration_seconds_sum": "3.7",
            "total_connection_duration_seconds_count": "2",
        ])
        #expect(histogram(registry, "total_connection_rtt_seconds") == [
            #"total_connection_rtt_seconds_bucket{le="0.01"}"#: "0",
            #"total_connection_rtt_seconds_bucket{le="0.05"}"#: "1",
            #"total_connection_rtt_seconds_bucket{le="+Inf"}"#: "2",
            "total_connection_rtt_seconds_sum": "0.070001",
            "total_connection_rtt_seconds_count": "2",
        ])
        #expect(histogram(registry, "total_connect_duration_seconds")["total_connect_duration_seconds_count"] == "2")
        // A view without buckets has none of them.
        #expect(renderedText(registry).contains("plain_connections_closed_total 3"))
        #expect(!renderedText(registry).contains("plain_connect_duration") && !renderedText(registry).contains("plain_connection_"))
    }

    /// Per series, the overflow one summing its label sets', through expiry.
    @Test func histogramsPerSeriesAndInTheOverflowSeries() {
        let capped = ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 1, connectionDurationBuckets: [1, 10])
        let registry = ConnectionRegistry(views: [capped], closedRetention: retention)
        func closing(_ id: UInt64, _ comm: String, _ lifetime: UInt64) -> ConnectionSample {
            end(id, comm, closed: true, ConnectionLifecycle(role: .client, established: true, lifetimeMicroseconds: lifetime))
        }
        registry.update(with: [closing(1, "a", 500_000), closing(2, "b", 2_000_000), closing(3, "c", 20_000_000)], now: 0)
        let expected = [
            #"capped_connection_duration_seconds_bucket{comm="a",le="1"}"#: "1",
            #"capped_connection_duration_seconds_bucket{comm="a",le="10"}"#: "1",
            #"capped_connection_duration_seconds_bucket{comm="a",le="+Inf"}"#: "1",
            #"capped_connection_duration_seconds_sum{comm="a"}"#: "0.5",
            #"capped_connection_duration_seconds_count{comm="a"}"#: "1",
            #"capped_connection_duration_seconds_bucket{comm="__overflow__",le="1"}"#: "0",
            #"capped_connection_duration_seconds_bucket{comm="__overflow__",le="10"}"#: "1",
            #"capped_connection_duration_seconds_bucket{comm="__overflow__",le="+Inf"}"#: "2",
            #"capped_connection_duration_seconds_sum{comm="__overflow__"}"#: "22",
            #"capped_connection_duration_seconds_count{comm="__overflow__"}"#: "2",
        ]
        #expect(histogram(registry, "capped_connection_duration_seconds") == expected)
        // "b" and "c" expire into the overflow series while a new "d" keeps it alive.
        registry.update(with: [end(4, "d", ConnectionLifecycle(role: .client))], now: retention - 1)
        registry.update(with: [end(4, "d", ConnectionLifecycle(role: .client))], now: retention)
        #expect(registry.viewStatistics.map(\.overflowedLabelSets) == [1])
        #expect(histogram(registry, "capped_connection_duration_seconds").filter { $0.key.contains("overflow") }
            == expected.filter { $0.key.contains("overflow") })
    }

    @Test func bucketBoundsAreWrittenAsPrometheusClientsWriteThem() {
        let view = ViewConfig(prefix: "t", labels: [], connectDurationBuckets: [0.000005, 0.0001, 0.005, 2.5, 5, 100_000, 1e6, 1.5e7])
        let registry = ConnectionRegistry(views: [view], closedRetention: retention)
        registry.update(with: [end(1, "a", ConnectionLifecycle(role: .client, connectMicroseconds: 5))], now: 0)
        let bounds = renderedText(registry).split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "{le=\"") else { return nil }
            return String(line[range.upperBound...].prefix { $0 != "\"" })
        }
        #expect(bounds == ["5e-06", "0.0001", "0.005", "2.5", "5", "100000", "1e+06", "1.5e+07", "+Inf"])
        // 5 µs is at the first bound: counted in it.
        #expect(renderedSamples(registry)[#"t_connect_duration_seconds_bucket{le="5e-06"}"#] == "1")
    }

    /// Every family and view, odd label values, overflow and histograms.
    @Test func promtoolAcceptsTheText() throws {
        let registry = ConnectionRegistry(
            views: views + [ViewConfig(prefix: "hist", labels: [.comm], maxSeries: 1, connectDurationBuckets: [0.001, 0.1],
                                       connectionDurationBuckets: [1, 5], rttBuckets: [0.01])],
            closedRetention: retention)
        var odd = end(9, "x", closed: true, rtt: 7, ConnectionLifecycle(
            role: .server, established: true, lifetimeMicroseconds: 3_000_001, resetsReceived: 1))
        odd.labels.comm = [0x22, 0x5C, 0x0A, 0xFF]
        registry.update(with: [
            end(1, "a", ConnectionLifecycle(role: .client, established: true, connectMicroseconds: 900, resetsSent: 2)),
            end(2, "b", sent: 0, closed: true, ConnectionLifecycle(role: .client, connectError: 110)),
            end(3, "c", closed: true, rtt: 4000, ConnectionLifecycle(role: .client, connectError: -1)),
            odd,
        ], now: 0)
        let text = renderedText(registry)
        for family in Self.outcomeFamilies + ["_connect_duration_seconds_bucket", "_connection_duration_seconds_sum",
                                              "_connection_rtt_seconds_count"] {
            #expect(text.contains(family + "{"), "\(family)")
        }
        let result = try promtoolCheckMetrics(text)
        #expect(result.status == 0, "promtool: \(result.output)")
    }
}
