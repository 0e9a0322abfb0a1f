import Testing
import TCPTopCore

/// Views that drop labels or cap their series.
@Suite struct RegistryViewTests {
    let retention = 60.0

    @Test func droppingLabelsSumsExactly() {
        let byComm = ViewConfig(prefix: "by_comm", labels: [.comm])
        let total = ViewConfig(prefix: "total", labels: [])
        let registry = ConnectionRegistry(views: [ViewConfig(), byComm, total], closedRetention: retention)
        let samples = [
            sample(cookie: 1, pid: 1, comm: "curl", sent: 10, received: 1),
            sample(cookie: 2, pid: 2, comm: "curl", lport: 2, sent: 20, received: 2),
            sample(cookie: 3, pid: 3, comm: "ssh", sent: 300, received: 3),
        ]
        registry.update(with: samples, now: 0)
        let values = renderedValues(registry)
        #expect(values[#"by_comm_sent_bytes_total{comm="curl"}"#] == 30)
        #expect(values[#"by_comm_received_bytes_total{comm="curl"}"#] == 3)
        #expect(values[#"by_comm_sent_bytes_total{comm="ssh"}"#] == 300)
        #expect(values["total_sent_bytes_total"] == samples.reduce(0) { $0 + $1.sentBytes })
        #expect(values["total_received_bytes_total"] == samples.reduce(0) { $0 + $1.receivedBytes })
        #expect(registry.viewStatistics.map(\.series) == [3, 2, 1])
        #expect(registry.viewStatistics.map(\.overflowedLabelSets) == [0, 0, 0])
    }

    @Test func viewKeepsItsValueWhenMembersExpire() {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "by_comm", labels: [.comm])], closedRetention: retention)
        let curl = #"by_comm_sent_bytes_total{comm="curl"}"#
        registry.update(with: [
            sample(cookie: 1, sent: 10, received: 0, closed: true),
            sample(cookie: 2, lport: 2, sent: 20, received: 0),
        ], now: 0)
        registry.update(with: [sample(cookie: 2, lport: 2, sent: 25, received: 0)], now: retention)
        #expect(registry.liveEntries == 1)
        #expect(renderedValues(registry)[curl] == 35)
        registry.update(with: [sample(cookie: 3, lport: 3, sent: 1, received: 0)], now: 2 * retention)
        #expect(registry.liveEntries == 1)  // cookie 2 was missing from the last read: final, folded in
        #expect(renderedValues(registry)[curl] == 36)
    }

    @Test func labelSetsPastTheCapShareOneOverflowSeries() {
        let capped = ViewConfig(prefix: "capped", labels: [.comm, .rport], maxSeries: 2)
        let registry = ConnectionRegistry(views: [capped], closedRetention: retention,
                                          health: withoutLifecycle)
        let overflow = #"capped_sent_bytes_total{comm="__overflow__",rport="__overflow__"}"#
        registry.update(with: [
            sample(cookie: 1, comm: "a", sent: 1, received: 0),
            sample(cookie: 2, comm: "b", sent: 2, received: 0),
            sample(cookie: 3, comm: "c", sent: 4, received: 0),
            sample(cookie: 4, comm: "d", sent: 8, received: 0),
            sample(cookie: 5, comm: "a", sent: 16, received: 0),
        ], now: 0)
        var values = renderedValues(registry)
        #expect(values.count == 6)  // 2 own + overflow, in 2 families
        #expect(values[#"capped_sent_bytes_total{comm="a",rport="443"}"#] == 17)
        #expect(values[#"capped_sent_bytes_total{comm="b",rport="443"}"#] == 2)
        #expect(values[overflow] == 12)
        #expect(registry.viewStatistics == [.init(prefix: "capped", series: 3, overflowedLabelSets: 2)])

        // "b" closes and expires with its series: room for one own series again.
        let stillOpen = [1, 3, 4, 5].map { cookie in
            sample(cookie: UInt64(cookie), comm: ["a", "c", "d", "a"][[1, 3, 4, 5].firstIndex(of: cookie)!], sent: 0, received: 0)
        }
        registry.update(with: stillOpen, now: retention)
        #expect(registry.viewStatistics[0].series == 2)
        // A new connection of an overflowed label set stays in overflow; a new label set gets the free place.
        registry.update(with: stillOpen + [
            sample(cookie: 6, comm: "c", sent: 32, received: 0),
            sample(cookie: 7, comm: "e", sent: 64, received: 0),
        ], now: retention + 1)
        values = renderedValues(registry)
        #expect(values[overflow] == 12 + 32)
        #expect(values[#"capped_sent_bytes_total{comm="e",rport="443"}"#] == 64)
        #expect(registry.viewStatistics == [.init(prefix: "capped", series: 3, overflowedLabelSets: 2)])
    }

    @Test func overflowNeverGoesBackwardsAndDisappearsLast() {
        let capped = ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 1)
        let registry = ConnectionRegistry(views: [capped], closedRetention: retention,
                                          health: withoutLifecycle)
        let overflow = #"capped_sent_bytes_total{comm="__overflow__"}"#
        registry.update(with: [
            sample(cookie: 1, comm: "a", sent: 1, received: 0),
            sample(cookie: 2, comm: "b", sent: 2, received: 0, closed: true),
            sample(cookie: 3, comm: "c", sent: 4, received: 0),
        ], now: 0)
        #expect(renderedValues(registry)[overflow] == 6)
        // "b" expires: its bytes move into the overflow series' base.
        registry.update(with: [sample(cookie: 1, comm: "a", sent: 1, received: 0), sample(cookie: 3, comm: "c", sent: 5, received: 0)], now: retention)
        #expect(registry.viewStatistics[0].overflowedLabelSets == 1)
        #expect(renderedValues(registry)[overflow] == 7)
        // "c" closes at its last activity (retention); overflow lasts until both are past retention.
        registry.update(with: [sample(cookie: 1, comm: "a", sent: 1, received: 0)], now: 2 * retention - 1)
        #expect(renderedValues(registry)[overflow] == 7)
        registry.update(with: [sample(cookie: 1, comm: "a", sent: 1, received: 0)], now: 2 * retention)
        #expect(renderedValues(registry)[overflow] == nil)
        #expect(registry.viewStatistics == [.init(prefix: "capped", series: 1, overflowedLabelSets: 0)])
    }

    @Test func realLabelSetThatLooksLikeOverflowJoinsIt() {
        let capped = ViewConfig(prefix: "capped", labels: [.comm], maxSeries: 5)
        let registry = ConnectionRegistry(views: [capped], closedRetention: retention)
        registry.update(with: [sample(cookie: 1, comm: "__overflow__", sent: 3, received: 0)], now: 0)
        #expect(renderedValues(registry)[#"capped_sent_bytes_total{comm="__overflow__"}"#] == 3)
    }

    /// Random churn through several views: a counter series present in two
    /// consecutive scrapes never decreases, and with nothing expired yet,
    /// every view's total equals the bytes (and retransmits) of all connection ends.
    @Test(arguments: [1 as UInt64, 2, 3])
    func randomChurnIsMonotonicAndExact(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let views = [
            ViewConfig(),
            ViewConfig(prefix: "comm", labels: [.comm]),
            ViewConfig(prefix: "capped", labels: [.pid, .rport], maxSeries: 3),
            ViewConfig(prefix: "total", labels: []),
        ]
        let registry = ConnectionRegistry(views: views, closedRetention: 30)
        var open: [ConnectionSample] = []
        var everSentTotal: UInt64 = 0
        var everRetransmitted: UInt64 = 0
        var previous: [String: UInt64] = [:]
        var nextCookie: UInt64 = 1
        for step in 0..<300 {
            var read: [ConnectionSample] = []
            for _ in 0..<Int(random.next() % 4) {
                open.append(sample(
                    cookie: nextCookie, pid: UInt32(random.next() % 5), comm: ["a", "b", "c"][Int(random.next() % 3)],
                    lport: UInt16(random.next() % 3), rport: UInt16(random.next() % 6), sent: 0, received: 0))
                nextCookie += 1
            }
            // Each either grows and stays open, grows and is reported closed once,
            // or vanishes from the kernel map with the values of the last read.
            var stillOpen: [ConnectionSample] = []
            for var connection in open {
                let fate = random.next() % 10
                if fate == 1 { continue }
                let grow = random.next() % 2 == 0 ? random.next() % 1000 : 0
                connection.sentBytes += grow
                everSentTotal += grow
                let retransmits = random.next() % 3 == 0 ? random.next() % 4 : 0
                connection.retransmittedSegments += retransmits
                everRetransmitted += retransmits
                connection.smoothedRTTMicroseconds = UInt32(random.next() % 3 * 1000)
                connection.closed = fate == 0
                read.append(connection)
                if !connection.closed { stillOpen.append(connection) }
            }
            open = stillOpen
            registry.update(with: read, now: Double(step))
            let current = renderedValues(registry, families: ["_total"])
            for (series, value) in current {
                if let before = previous[series] { #expect(value >= before, "\(series) went back at step \(step)") }
            }
            if step < 30 {
                for prefix in ["tcptop", "comm", "capped", "total"] {
                    let total = current.filter { $0.key.hasPrefix("\(prefix)_sent_bytes_total") }.values.reduce(0, +)
                    #expect(total == everSentTotal, "view \(prefix) at step \(step)")
                    let retransmitted = current.filter { $0.key.hasPrefix("\(prefix)_retransmitted_segments_total") }
                    #expect(retransmitted.values.reduce(0, +) == everRetransmitted, "view \(prefix) at step \(step)")
                }
            }
            // The view of no labels shows the highest RTT of the ends open after this read.
            let highest = read.filter { !$0.closed }.map(\.smoothedRTTMicroseconds).max() ?? 0
            #expect(renderedRTT(registry)["total_rtt_seconds"] == (highest == 0 ? nil : "\(Double(highest) / 1e6)"))
            #expect(registry.viewStatistics[2].series <= 4)
            previous = current
        }
    }
}
