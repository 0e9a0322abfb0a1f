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
}
