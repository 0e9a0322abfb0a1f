import Testing
import TCPTopCore

/// The default view: every label, no cap.
@Suite struct RegistryTests {
    let retention = 300.0

    @Test func rendersGoldenText() {
        let registry = ConnectionRegistry(closedRetention: retention)
        var weird = sample(cookie: 1, pid: 42, comm: "x", sent: 100, received: 7, retransmits: 3, rtt: 80812)
        weird.labels.comm = [0x22, 0x0A, 0xFF]
        registry.update(with: [
            weird,
            sample(cookie: 2, pid: 7, comm: "ssh", family: .ipv6, laddr: "::1", lport: 22, raddr: "::1", rport: 50000,
                   sent: 0, received: 12345678901234),
        ], now: 0)
        var writer = ExpositionWriter()
        registry.render(into: &writer)
        let expected = """
            # HELP tcptop_sent_bytes_total \(ConnectionRegistry.sentHelp)
            # TYPE tcptop_sent_bytes_total counter
            tcptop_sent_bytes_total{pid="42",comm="\\"\\n\u{FFFD}",family="ipv4",laddr="10.0.0.1",lport="40000",raddr="10.0.0.2",rport="443"} 100
            tcptop_sent_bytes_total{pid="7",comm="ssh",family="ipv6",laddr="::1",lport="22",raddr="::1",rport="50000"} 0
            # HELP tcptop_received_bytes_total \(ConnectionRegistry.receivedHelp)
            # TYPE tcptop_received_bytes_total counter
            tcptop_received_bytes_total{pid="42",comm="\\"\\n\u{FFFD}",family="ipv4",laddr="10.0.0.1",lport="40000",raddr="10.0.0.2",rport="443"} 7
            tcptop_received_bytes_total{pid="7",comm="ssh",family="ipv6",laddr="::1",lport="22",raddr="::1",rport="50000"} 12345678901234
            # HELP tcptop_retransmitted_segments_total \(ConnectionRegistry.retransmitsHelp)
            # TYPE tcptop_retransmitted_segments_total counter
            tcptop_retransmitted_segments_total{pid="42",comm="\\"\\n\u{FFFD}",family="ipv4",laddr="10.0.0.1",lport="40000",raddr="10.0.0.2",rport="443"} 3
            tcptop_retransmitted_segments_total{pid="7",comm="ssh",family="ipv6",laddr="::1",lport="22",raddr="::1",rport="50000"} 0
            # HELP tcptop_rtt_seconds \(ConnectionRegistry.rttHelp)
            # TYPE tcptop_rtt_seconds gauge
            tcptop_rtt_seconds{pid="42",comm="\\"\\n\u{FFFD}",family="ipv4",laddr="10.0.0.1",lport="40000",raddr="10.0.0.2",rport="443"} 0.080812

            """
        #expect(writer.text == expected)
    }

    @Test func emptyRegistryRendersNothing() {
        var writer = ExpositionWriter()
        ConnectionRegistry(closedRetention: retention).render(into: &writer)
        #expect(writer.bytes.isEmpty)
    }

    @Test func countersTakeNewValuesButNeverGoBackwards() {
        let registry = ConnectionRegistry(closedRetention: retention)
        let key = #"tcptop_sent_bytes_total{pid="100",comm="curl",family="ipv4",laddr="10.0.0.1",lport="40000",raddr="10.0.0.2",rport="443"}"#
        registry.update(with: [sample(cookie: 1, sent: 10, received: 1)], now: 0)
        #expect(renderedValues(registry)[key] == 10)
        registry.update(with: [sample(cookie: 1, sent: 25, received: 1)], now: 1)
        #expect(renderedValues(registry)[key] == 25)
        registry.update(with: [sample(cookie: 1, sent: 3, received: 0)], now: 2)
        #expect(renderedValues(registry)[key] == 25)
        #expect(renderedValues(registry)[key.replacingOccurrences("sent", "received")] == 1)
    }

    @Test func closedEntryIsLetGoAndItsSeriesExpiresAfterRetentionFromLastActivity() {
        let registry = ConnectionRegistry(closedRetention: retention)
        registry.update(with: [sample(cookie: 1, sent: 10, received: 0)], now: 0)
        registry.update(with: [sample(cookie: 1, sent: 20, received: 0, closed: true)], now: 50)
        // Its final counts are in its series; the end itself is let go at once.
        #expect(registry.liveEntries == 0)
        // Gone from the kernel map: later reads no longer carry it.
        registry.update(with: [], now: 50 + retention - 0.001)
        #expect(renderedValues(registry).values.contains(20))
        registry.update(with: [], now: 50 + retention)
        #expect(registry.liveEntries == 0)
        #expect(renderedValues(registry).isEmpty)
        #expect(registry.viewStatistics[0].series == 0)
    }

    @Test func openEntriesNeverExpireEvenWhenIdle() {
        let registry = ConnectionRegistry(closedRetention: retention)
        registry.update(with: [sample(cookie: 1, sent: 5, received: 5)], now: 0)
        registry.update(with: [sample(cookie: 1, sent: 5, received: 5)], now: 1e9)
        registry.expire(now: 2e9)
        #expect(registry.liveEntries == 1)
        #expect(renderedValues(registry).values.sorted() == [5, 5])
    }

    /// Churn: many short connection ends with equal labels (a reused 4-tuple)
    /// are one series, and memory holds the series, not the ends.
    @Test func closedEndsFoldIntoTheirSeriesSoMemoryFollowsSeries() {
        let registry = ConnectionRegistry(closedRetention: retention)
        for cookie in 1...1000 {
            registry.update(with: [sample(cookie: UInt64(cookie), lport: UInt16(40000 + cookie % 10), sent: 3, received: 1,
                                          closed: true)], now: Double(cookie) / 100)
        }
        #expect(registry.liveEntries == 0)
        #expect(registry.viewStatistics[0].series == 10)
        let values = renderedValues(registry).values
        #expect(values.reduce(0, +) == 1000 * 4)  // every byte, sent and received, in the series
        #expect(Set(values) == [300, 100])
    }

    @Test func entryMissingFromAReadCountsAsClosed() {
        let registry = ConnectionRegistry(closedRetention: retention,
                                          health: withoutLifecycle)
        registry.update(with: [sample(cookie: 1, sent: 5, received: 0), sample(cookie: 2, lport: 2, sent: 7, received: 0)], now: 0)
        registry.update(with: [sample(cookie: 1, sent: 6, received: 0)], now: 10)
        #expect(registry.liveEntries == 1)  // cookie 2 is final: folded into its series
        #expect(renderedValues(registry).values.filter { $0 > 0 }.sorted() == [6, 7])
        registry.update(with: [sample(cookie: 1, sent: 6, received: 0)], now: retention)
        #expect(registry.liveEntries == 1)
        #expect(renderedValues(registry).values.filter { $0 > 0 } == [6])
    }

    /// Two connection ends with all seven labels equal (a 4-tuple reused by
    /// the same process) are one series; when one expires its bytes stay.
    @Test func duplicateLabelSetsShareOneSeriesThatNeverGoesBackwards() {
        let registry = ConnectionRegistry(closedRetention: retention)
        registry.update(with: [sample(cookie: 1, sent: 100, received: 1, closed: true)], now: 0)
        registry.update(with: [sample(cookie: 2, sent: 40, received: 2)], now: 10)
        var values = renderedValues(registry)
        #expect(values.count == 2)
        #expect(values.values.sorted() == [3, 140])
        registry.update(with: [sample(cookie: 2, sent: 41, received: 2)], now: retention + 1)
        #expect(registry.liveEntries == 1)
        values = renderedValues(registry)
        #expect(values.values.sorted() == [3, 141])
        #expect(registry.viewStatistics == [.init(prefix: "tcptop", series: 1, overflowedLabelSets: 0)])
    }

    /// A series outlives its last member by the retention, measured from the series' last activity.
    @Test func seriesWithoutMembersLastsUntilItsOwnRetention() {
        let registry = ConnectionRegistry(closedRetention: retention)
        registry.update(with: [sample(cookie: 1, sent: 1, received: 0, closed: true)], now: 0)
        registry.update(with: [sample(cookie: 2, sent: 2, received: 0, closed: true)], now: 100)
        registry.expire(now: retention)  // the series was active at 100: it stays
        #expect(registry.liveEntries == 0)
        #expect(renderedValues(registry).values.sorted() == [0, 3])
        registry.expire(now: 100 + retention)
        #expect(renderedValues(registry).isEmpty)
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
