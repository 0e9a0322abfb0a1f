/// Keeps the byte counters of every connection end between kernel reads and
/// serves them as Prometheus series through one or more views.
///
/// Not thread-safe: the caller serialises `update`, `expire` and `render`.
/// Times are monotonic seconds supplied by the caller.
public final class ConnectionRegistry {
    /// Closed connection ends (and series left without members) are kept
    /// this long after their last activity.
    public var closedRetention: Double

    /// Dense: an expired entry is replaced by the last one, and every view's
    /// `slotOfEntry` mirrors that move.
    private(set) var entries: [RegistryEntry] = []
    private var indexOfID: [ConnectionID: Int] = [:]
    let views: [SeriesView]
    private var readCount: UInt64 = 0

    public init(views: [ViewConfig] = [ViewConfig()], closedRetention: Double) {
        self.views = views.map(SeriesView.init)
        self.closedRetention = closedRetention
    }

    public convenience init(config: ExporterConfig) {
        self.init(views: config.views, closedRetention: config.connections.closedRetention.inSeconds)
    }

    /// Takes one full read of the kernel map: every connection end it holds.
    /// Counters only move forward; an end missing from the read was deleted
    /// from the kernel, so its last values are final. Then expires what is due.
    public func update(with samples: [ConnectionSample], now: Double) {
        readCount &+= 1
        indexOfID.reserveCapacity(samples.count)  // one resize up front on a first big read
        for sample in samples {
            if let index = indexOfID[sample.id] {
                apply(sample, toEntryAt: index, now: now)
            } else {
                insert(sample, now: now)
            }
        }
        for index in entries.indices where entries[index].lastRead != readCount {
            entries[index].closed = true
        }
        expire(now: now)
    }

    private func insert(_ sample: ConnectionSample, now: Double) {
        indexOfID[sample.id] = entries.count
        entries.append(RegistryEntry(
            id: sample.id, sent: sample.sentBytes, received: sample.receivedBytes,
            lastActivity: now, closed: sample.closed, lastRead: readCount))
        for view in views { view.addMember(labels: sample.labels, now: now) }
    }

    private func apply(_ sample: ConnectionSample, toEntryAt index: Int, now: Double) {
        var entry = entries[index]
        // A lower value can only be a stale read; keeping the higher one keeps every sum monotonic.
        let changed = sample.sentBytes > entry.sent || sample.receivedBytes > entry.received
        entry.sent = max(entry.sent, sample.sentBytes)
        entry.received = max(entry.received, sample.receivedBytes)
        entry.closed = entry.closed || sample.closed
        entry.lastRead = readCount
        if changed {
            entry.lastActivity = now
            for view in views { view.touchMember(at: index, now: now) }
        }
        entries[index] = entry
    }

    /// Removes closed connection ends whose last activity is `closedRetention` or
    /// more ago (their counts stay in their series), then series that are
    /// left without members for that long. Open ends never expire.
    public func expire(now: Double) {
        var index = 0
        while index < entries.count {
            let entry = entries[index]
            guard entry.closed, now - entry.lastActivity >= closedRetention else {
                index += 1
                continue
            }
            for view in views {
                view.removeMember(at: index, finalSent: entry.sent, finalReceived: entry.received)
            }
            indexOfID[entry.id] = nil
            let last = entries.removeLast()
            if index < entries.count {
                entries[index] = last
                indexOfID[last.id] = index
            }
        }
        for view in views { view.expireSeries(now: now, retention: closedRetention) }
    }

    // MARK: Statistics for self-metrics

    /// Connection ends held, open and closed.
    public var liveEntries: Int { entries.count }

    public struct ViewStatistics: Equatable, Sendable {
        public var prefix: String
        /// Series rendered per family, the overflow series included.
        public var series: Int
        /// Label sets past `maxSeries`, counted inside the overflow series.
        public var overflowedLabelSets: Int

        public init(prefix: String, series: Int, overflowedLabelSets: Int) {
            self.prefix = prefix
            self.series = series
            self.overflowedLabelSets = overflowedLabelSets
        }
    }

    public var viewStatistics: [ViewStatistics] {
        views.map {
            ViewStatistics(
                prefix: $0.config.prefix, series: $0.renderedSeriesCount,
                overflowedLabelSets: $0.overflowedLabelSetCount)
        }
    }
}

/// One connection end as the registry holds it.
struct RegistryEntry {
    var id: ConnectionID
    var sent: UInt64
    var received: UInt64
    var lastActivity: Double
    var closed: Bool
    /// The `update` call that last carried this entry.
    var lastRead: UInt64
}
