import Testing
import TCPTopCore

@Suite struct TopIntervalsTests {
    func bytes(_ rows: [TopRow]) -> [UInt32: [UInt64]] {
        Dictionary(uniqueKeysWithValues: rows.map { ($0.labels.pid, [$0.sentBytes, $0.receivedBytes]) })
    }

    @Test func firstReadCountsFromZeroThenOnlyTheInterval() {
        var counter = TopIntervalCounter<ConnectionID>()
        #expect(bytes(counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 100, received: 10)])) == [1: [100, 10]])
        #expect(bytes(counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 250, received: 10),
                                       sample(cookie: 2, pid: 2, sent: 5, received: 7)])) == [1: [150, 0], 2: [5, 7]])
    }

    @Test func rowsWithoutTrafficAreLeftOut() {
        var counter = TopIntervalCounter<ConnectionID>()
        _ = counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 100, received: 10)])
        #expect(counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 100, received: 10)]).isEmpty)
        #expect(counter.trackedCount == 1)
    }

    @Test func closedConnectionsAreReportedOnceThenForgotten() {
        var counter = TopIntervalCounter<ConnectionID>()
        _ = counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 100, received: 10)])
        #expect(bytes(counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 130, received: 10, closed: true)])) == [1: [30, 0]])
        #expect(counter.trackedCount == 0)
        #expect(counter.advance(samples: []).isEmpty)
    }

    @Test func aConnectionOpenedAndClosedWithinOneIntervalCountsWhole() {
        var counter = TopIntervalCounter<ConnectionID>()
        #expect(bytes(counter.advance(samples: [sample(cookie: 9, pid: 3, sent: 4096, received: 2048, closed: true)])) == [3: [4096, 2048]])
        #expect(counter.trackedCount == 0)
    }

    @Test func missingCountersAreForgotten() {
        var counter = TopIntervalCounter<ConnectionID>()
        _ = counter.advance(samples: [sample(cookie: 1, pid: 1, sent: 100, received: 0)])
        _ = counter.advance(samples: [])
        #expect(counter.trackedCount == 0)
    }

    @Test func aCounterThatWentDownWasReset() {
        var counter = TopIntervalCounter<ConnectionLabels>()
        let labels = sample(cookie: 1, sent: 0, received: 0).labels
        _ = counter.advance([TopCounterReading(key: labels, labels: labels, sentBytes: 1000, receivedBytes: 1000)])
        let rows = counter.advance([TopCounterReading(key: labels, labels: labels, sentBytes: 40, receivedBytes: 1500)])
        #expect(rows.map { [$0.sentBytes, $0.receivedBytes] } == [[40, 500]])
    }

    @Test func connectionEndsWithTheSameLabelsAreOneRow() {
        var counter = TopIntervalCounter<ConnectionID>()
        let rows = counter.advance(samples: [
            sample(cookie: 1, pid: 1, sent: 100, received: 1), sample(cookie: 2, pid: 1, sent: 50, received: 2),
            sample(cookie: 3, pid: 1, lport: 40001, sent: 7, received: 0),
        ])
        #expect(rows.map { [$0.sentBytes, $0.receivedBytes] } == [[150, 3], [7, 0]])
    }

    // -R: retransmits and RTT.

    func healthy(_ base: ConnectionSample, retrans: UInt64, rtt: UInt32 = 0) -> ConnectionSample {
        var sample = base
        sample.retransmittedSegments = retrans
        sample.smoothedRTTMicroseconds = rtt
        return sample
    }

    func health(_ rows: [TopRow]) -> [[UInt64?]] {
        rows.map { [$0.retransmittedSegments, $0.smoothedRTTMicroseconds.map(UInt64.init)] }
    }

    @Test func retransmitsPerIntervalFromRisingCounters() {
        var counter = TopIntervalCounter<ConnectionID>()
        #expect(health(counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 3, rtt: 40_000)]))
            == [[3, 40_000]])
        #expect(health(counter.advance(samples: [healthy(sample(cookie: 1, sent: 200, received: 0), retrans: 10, rtt: 41_500)]))
            == [[7, 41_500]])
        #expect(health(counter.advance(samples: [healthy(sample(cookie: 1, sent: 300, received: 0), retrans: 10, rtt: 41_000)]))
            == [[0, 41_000]])
    }

    @Test func aClosedEndReportsItsFinalCountOnce() {
        var counter = TopIntervalCounter<ConnectionID>()
        _ = counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 5, rtt: 30_000)])
        let rows = counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0, closed: true), retrans: 8, rtt: 52_000)])
        #expect(health(rows) == [[3, 52_000]] && rows[0].totalBytes == 0)
        #expect(counter.trackedCount == 0)
        #expect(counter.advance(samples: []).isEmpty)
    }

    @Test func retransmitsAloneMakeARowButAnRTTAloneDoesNot() {
        var counter = TopIntervalCounter<ConnectionID>()
        _ = counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 1, rtt: 20_000)])
        let stalled = counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 3, rtt: 90_000)])
        #expect(health(stalled) == [[2, 90_000]] && stalled[0].totalBytes == 0)
        #expect(counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 3, rtt: 95_000)]).isEmpty)
    }

    @Test func retransmitsNotCountedAndAnRTTOfZeroAreUnknown() {
        var counter = TopIntervalCounter<ConnectionID>()
        let rows = counter.advance(samples: [healthy(sample(cookie: 1, sent: 100, received: 0), retrans: 0)],
                                   retransmitsCounted: false)
        #expect(health(rows) == [[nil, nil]])
        #expect(health(counter.advance(samples: [healthy(sample(cookie: 1, sent: 200, received: 0), retrans: 0)]))
            == [[0, nil]])
    }

    @Test func endsWithTheSameLabelsSumRetransmitsAndPreferAnOpenEndsRTT() {
        var counter = TopIntervalCounter<ConnectionID>()
        let rows = counter.advance(samples: [
            healthy(sample(cookie: 1, sent: 10, received: 0, closed: true), retrans: 4, rtt: 99_000),
            healthy(sample(cookie: 2, sent: 10, received: 0), retrans: 1, rtt: 20_000),
            healthy(sample(cookie: 3, sent: 10, received: 0), retrans: 0, rtt: 35_000),
            healthy(sample(cookie: 4, sent: 10, received: 0), retrans: 2),  // RTT unknown: ignored
        ])
        #expect(health(rows) == [[7, 35_000]] && rows[0].sentBytes == 40)
        // Only closed ends: the RTT as of the close.
        let closed = counter.advance(samples: [healthy(sample(cookie: 5, sent: 10, received: 0, closed: true), retrans: 0, rtt: 61_000)])
        #expect(health(closed) == [[0, 61_000]])
    }

    @Test func aRetransmitCounterThatWentDownWasReset() {
        var counter = TopIntervalCounter<ConnectionLabels>()
        let labels = sample(cookie: 1, sent: 0, received: 0).labels
        _ = counter.advance([TopCounterReading(key: labels, labels: labels, sentBytes: 0, receivedBytes: 0, retransmittedSegments: 50)])
        let rows = counter.advance([TopCounterReading(key: labels, labels: labels, sentBytes: 0, receivedBytes: 0, retransmittedSegments: 6)])
        #expect(health(rows) == [[6, nil]])
    }
}
