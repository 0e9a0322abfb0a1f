/// Keeps the byte counters of every connection end between kernel reads and
/// serves them as Prometheus series through one or more views.
///
/// Not thread-safe: the caller serialises `update`, `expire` and `render`.
/// Times are monotonic seconds supplied by the caller.
public final class ConnectionRegistry {
    /// Series left without open connection ends are kept this long after
    /// their last activity (a closed end's final counts stay in its series).
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
    /// Counters only move forward. An end the read says is closed, or that is
    /// missing from it (deleted from the kernel), has its final counts folded
    /// into its series and is let go at once: memory follows the series, not
    /// the rate of connections (ephemeral ports repeat, so under churn many
    /// ends share a series). The kernel never hands out a closed end's id
    /// again. Then expires the series that are due.
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
        var index = 0
        while index < entries.count {
            if entries[index].closed || entries[index].lastRead != readCount {
                remove(at: index)  // the last entry moves here: look at this index again
            } else {
                index += 1
            }
        }
        expire(now: now)
    }

    private func insert(_ sample: ConnectionSample, now: Double) {
        indexOfID[sample.id] = entries.count
        entries.append(RegistryEntry(
            id: sample.id, sent: sample.sentBytes, received: sample.receivedBytes,
            closed: sample.closed, lastRead: readCount))
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
            for view in views { view.touchMember(at: index, now: now) }
        }
        entries[index] = entry
    }

    /// Folds the final counts of the entry at `index` into its series in
    /// every view, then removes it (the last entry moves into its place).
    private func remove(at index: Int) {
        let entry = entries[index]
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

    /// Removes series that have had no open connection end and no activity
    /// for `closedRetention`. Open ends never expire.
    public func expire(now: Double) {
        for view in views { view.expireSeries(now: now, retention: closedRetention) }
    }

    // MARK: Statistics for self-metrics

    /// Open connection ends held (closed ones live on in their series only).
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
    var closed: Bool
    /// The `update` call that last carried this entry.
    var lastRead: UInt64
}
