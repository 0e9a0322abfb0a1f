/// Keeps the counters of every connection end between kernel reads (bytes,
/// and the TCP health the kernel side reads: retransmits, smoothed RTT) and
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
    private var index = EntryIndex()
    private(set) var views: [SeriesView]
    /// Never `RegistryEntry.closedMark` (0): it skips it when it wraps.
    private var readCount: UInt32 = 0
    /// No entry ever had a higher cookie: an id above it is new without a
    /// look-up (the kernel hands out cookies from a rising counter, so most
    /// new connections are), which spares a cache miss per new connection.
    private var highestCookie: UInt64 = 0
    /// Where the touched values go, so the loads that touch them are kept.
    private var touchSink: Int32 = 0

    /// The health families every view renders after its byte families.
    public let health: HealthFamilies
    private let countsLifecycle: Bool
    private let countsResets: Bool
    private let observesClosedRTT: Bool
    /// The reset counts of the few entries with more than 254 in a direction
    /// (an entry holds a byte per direction, in its padding).
    private var largeResets: [ConnectionID: (sent: UInt32, received: UInt32)] = [:]
    private(set) var failureReasons = FailureReasons()
    /// Some entry's role or establishment is in its bits (a snapshot sums them); stays set.
    private(set) var openEndsWithFacts = false

    /// Resolve the labels made from cgroup ids, uids and remote addresses,
    /// when some view keeps one.
    private let attributed: Bool
    private let names: AttributionNames?
    private let networkNames: RemoteNetworkNames

    /// `health`: the families the kernel side can fill; one it has no hook
    /// for is left out of the text (absent, not zeros). `networks`: for the
    /// `remote_network` label. `names`: where cgroup ids are looked up (the
    /// host's cgroup v2 tree by default).
    public init(views: [ViewConfig] = [ViewConfig()], closedRetention: Double, health: HealthFamilies = .all,
                networks: [NamedNetwork] = [], names: AttributionNames? = nil) {
        self.views = views.map { SeriesView(config: $0, health: health) }
        attributed = views.contains { EndAttribution.isNeeded(by: $0.labels) }
        self.names = names ?? (attributed ? AttributionNames() : nil)
        networkNames = RemoteNetworkNames(networks)
        self.closedRetention = closedRetention
        self.health = health
        countsLifecycle = health.contains(.lifecycle)
        countsResets = health.contains(.resets)
        observesClosedRTT = health.contains(.rtt) && self.views.contains { $0.hasClosedRTTHistogram }
    }

    public convenience init(config: ExporterConfig, health: HealthFamilies = .all, names: AttributionNames? = nil) {
        self.init(views: config.views, closedRetention: config.connections.closedRetention.inSeconds, health: health,
                  networks: config.networks, names: names)
    }

    private func attribution(of sample: ConnectionSample) -> EndAttribution {
        EndAttribution(
            cgroup: names?.cgroup(id: sample.labels.cgroupID, pid: sample.labels.pid) ?? CgroupAttribution(path: ""),
            user: names?.userName(uid: sample.labels.uid) ?? "",
            remoteNetwork: networkNames.name(of: sample.labels.remoteAddress))
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
        if readCount == RegistryEntry.closedMark { readCount = 1 }
        names?.beginRead()
        // One resize of each array up front on a first big read, not a doubling chain.
        index.reserve(samples.count, entries: entries)
        if samples.count > entries.capacity { entries.reserveCapacity(samples.count) }
        for view in views.indices { views[view].reserveMembers(samples.count) }
        // A read comes in the kernel's order, which holds from read to read,
        // and entries are kept in the order they were first read: the entry
        // after the last one found is tried before the index.
        var next = 0
        var current = 0
        while current < samples.count {
            // Fields, not the whole sample: a copy would retain its labels' three buffers.
            let id = samples[current].id
            if next < entries.count && entries[next].has(id) {
                apply(samples[current].counts, samples[current].lifecycle, toEntryAt: next, now: now)
                next += 1
            } else if id.cookie > highestCookie {
                // A run of rising cookies above every known one: all new, all distinct.
                var end = current + 1
                while end < samples.count && end - current < Self.batch && samples[end].id.cookie > samples[end - 1].id.cookie {
                    end += 1
                }
                insert(samples[current..<end], now: now)
                next = entries.count
                current = end
                continue
            } else if let position = index.find(id, in: entries) {
                apply(samples[current].counts, samples[current].lifecycle, toEntryAt: position, now: now)
                next = position + 1
            } else {
                insert(samples[current...current], now: now)
                next = entries.count
            }
            current += 1
        }
        var position = 0
        while position < entries.count {
            if entries[position].lastRead != readCount {  // closed, or missing from this read
                remove(at: position, now: now)  // the last entry moves here: look at this position again
            } else {
                position += 1
            }
        }
        expire(now: now)
    }

    /// New ends inserted in a batch of at most this many.
    static let batch = 32

    /// Inserts new, distinct ends. Their index entries and label texts are
    /// touched first, all of them, so that the cache misses of a big first
    /// read overlap instead of coming one after the other.
    private func insert(_ batch: ArraySlice<ConnectionSample>, now: Double) {
        var touched: Int32 = 0
        for sample in batch { touched &+= index.touch(sample.id) }
        let attributions = attributed ? batch.map(attribution(of:)) : []
        for view in views.indices { touched &+= views[view].prepare(batch, attributions: attributions) }
        touchSink = touched
        for (offset, sample) in batch.enumerated() {
            highestCookie = max(highestCookie, sample.id.cookie)
            index.insert(sample.id, at: entries.count, entries: entries)
            entries.append(RegistryEntry(
                sent: sample.sentBytes, received: sample.receivedBytes, retransmits: sample.retransmittedSegments,
                cookie: sample.id.cookie, pid: sample.id.pid,
                lastRead: sample.closed ? RegistryEntry.closedMark : readCount, rtt: sample.smoothedRTTMicroseconds))
            for view in views.indices { views[view].addPreparedMember(offset, now: now) }
            if sample.lifecycle.hasFacts {
                let position = entries.count - 1
                count(sample.lifecycle, closing: sample.closed, of: &entries[position], at: position, now: now)
            }
        }
    }

    private func apply(_ sample: SampleCounts, _ lifecycle: ConnectionLifecycle, toEntryAt position: Int, now: Double) {
        var entry = entries[position]
        if lifecycle.hasFacts {
            count(lifecycle, closing: sample.closed && entry.lastRead != RegistryEntry.closedMark, of: &entry, at: position, now: now)
        }
        // A lower value can only be a stale read; keeping the higher one keeps every sum monotonic.
        let changed = sample.sentBytes > entry.sent || sample.receivedBytes > entry.received
            || sample.retransmits > entry.retransmits
        entry.sent = max(entry.sent, sample.sentBytes)
        entry.received = max(entry.received, sample.receivedBytes)
        entry.retransmits = max(entry.retransmits, sample.retransmits)
        // A gauge, not a counter: the latest read says it.
        entry.rtt = sample.rtt
        // Closed stays closed for the rest of this read (a socket can appear live, then closed).
        if sample.closed || entry.lastRead == RegistryEntry.closedMark {
            entry.lastRead = RegistryEntry.closedMark
        } else {
            entry.lastRead = readCount
        }
        if changed {
            for view in views.indices { views[view].touchMember(at: position, now: now) }
        }
        entries[position] = entry
    }

    /// Counts what `lifecycle` says of the entry at `position` that it has
    /// not counted yet, in every view. `closing`: this read is the first to
    /// say it closed.
    private func count(_ lifecycle: ConnectionLifecycle, closing: Bool, of entry: inout RegistryEntry, at position: Int,
                       now: Double) {
        if countsLifecycle {
            // Bits only: an open end's are summed at a snapshot (no record for its series).
            if lifecycle.role != .unknown && !entry.facts.contains(.roleCounted) {
                entry.facts.insert(lifecycle.role == .server ? [.roleCounted, .server] : .roleCounted)
                openEndsWithFacts = true
            }
            if lifecycle.established && !entry.facts.contains(.established) {
                entry.facts.insert(.established)
                openEndsWithFacts = true
            }
            if lifecycle.connectError != 0 && !entry.facts.contains(.failureCounted) {
                entry.facts.insert(.failureCounted)
                let reason = failureReasons.code(of: lifecycle)
                for view in views.indices { views[view].countFailure(reason: reason, member: position, now: now) }
            }
            if lifecycle.connectMicroseconds != 0 && !entry.facts.contains(.connectObserved) {
                entry.facts.insert(.connectObserved)
                for view in views.indices {
                    views[view].observe(.connect, UInt64(lifecycle.connectMicroseconds), member: position)
                }
            }
            if closing && lifecycle.lifetimeMicroseconds != 0 && !entry.facts.contains(.lifetimeObserved) {
                entry.facts.insert(.lifetimeObserved)
                for view in views.indices { views[view].observe(.lifetime, lifecycle.lifetimeMicroseconds, member: position) }
            }
        }
        if countsResets && (lifecycle.resetsSent != 0 || lifecycle.resetsReceived != 0) {
            countResets(sent: lifecycle.resetsSent, received: lifecycle.resetsReceived, of: &entry, at: position, now: now)
        }
    }

    /// Resets are counters: what a read adds above the entry's highest so far is counted.
    private func countResets(sent: UInt32, received: UInt32, of entry: inout RegistryEntry, at position: Int, now: Double) {
        let known: (sent: UInt32, received: UInt32) = entry.facts.contains(.largeResets)
            ? largeResets[entry.id]! : (UInt32(entry.resetsSent), UInt32(entry.resetsReceived))
        guard sent > known.sent || received > known.received else { return }
        for view in views.indices {
            if sent > known.sent {
                views[view].countOutcome(.resetsSent, UInt64(sent - known.sent), member: position, now: now)
            }
            if received > known.received {
                views[view].countOutcome(.resetsReceived, UInt64(received - known.received), member: position, now: now)
            }
        }
        let highest = (sent: max(sent, known.sent), received: max(received, known.received))
        if entry.facts.contains(.largeResets) || highest.sent > 254 || highest.received > 254 {
            entry.facts.insert(.largeResets)
            largeResets[entry.id] = highest
        } else {
            entry.resetsSent = UInt8(highest.sent)
            entry.resetsReceived = UInt8(highest.received)
        }
    }

    /// Folds the final counts of the entry at `index` into its series in
    /// every view, then removes it (the last entry moves into its place).
    private func remove(at position: Int, now: Double) {
        let entry = entries[position]
        for view in views.indices {
            // Closed (or gone from the kernel): counted once, with its last RTT observed.
            if countsLifecycle { views[view].foldClosing(entry.facts, member: position, now: now) }
            if observesClosedRTT && entry.rtt != 0 { views[view].observe(.closedRTT, UInt64(entry.rtt), member: position) }
            views[view].removeMember(
                at: position, finalSent: entry.sent, finalReceived: entry.received, finalRetransmits: entry.retransmits)
        }
        if entry.facts.contains(.largeResets) { largeResets[entry.id] = nil }
        index.remove(entry.id, at: position)
        let last = entries.removeLast()
        if position < entries.count {
            entries[position] = last
            index.move(last.id, from: entries.count, to: position)
        }
    }

    /// Removes series that have had no open connection end and no activity
    /// for `closedRetention`. Open ends never expire.
    public func expire(now: Double) {
        for view in views.indices { views[view].expireSeries(now: now, retention: closedRetention) }
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

/// What a read says of a known end.
struct SampleCounts {
    var sentBytes: UInt64
    var receivedBytes: UInt64
    var retransmits: UInt64
    var rtt: UInt32
    var closed: Bool
}

extension ConnectionLifecycle {
    /// Anything for the registry to count (most ends of a tracer without the hooks: no).
    var hasFacts: Bool {
        role != .unknown || established || connectError != 0 || connectMicroseconds != 0 || lifetimeMicroseconds != 0
            || resetsSent != 0 || resetsReceived != 0
    }
}

extension ConnectionSample {
    var counts: SampleCounts {
        SampleCounts(sentBytes: sentBytes, receivedBytes: receivedBytes, retransmits: retransmittedSegments,
                     rtt: smoothedRTTMicroseconds, closed: closed)
    }
}

/// One connection end as the registry holds it: 47 bytes, 48 apart in the array.
struct RegistryEntry {
    var sent: UInt64
    var received: UInt64
    var retransmits: UInt64
    var cookie: UInt64
    var pid: UInt32
    /// The `update` call that last carried this entry, or `closedMark`
    /// once a read said it closed (it is let go at the end of that read).
    var lastRead: UInt32
    /// The smoothed RTT in microseconds as of the last read; 0 = unknown.
    var rtt: UInt32
    /// Lifecycle facts already counted, and the highest reset counts seen
    /// (in `largeResets` instead once one passes 254): the padding's 3 bytes.
    var facts = EntryFacts()
    var resetsSent: UInt8 = 0
    var resetsReceived: UInt8 = 0

    static let closedMark: UInt32 = 0

    var id: ConnectionID { ConnectionID(cookie: cookie, pid: pid) }
    func has(_ id: ConnectionID) -> Bool { cookie == id.cookie && pid == id.pid }
}

/// The TCP health families a registry renders besides the byte counters.
/// The tracer says which its kernel can fill: a family without a kernel
/// hook is left out, never rendered as zeros that look like health.
public struct HealthFamilies: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// `<prefix>_retransmitted_segments_total`, a counter.
    public static let retransmits = HealthFamilies(rawValue: 1)
    /// `<prefix>_rtt_seconds`, a gauge (and `<prefix>_connection_rtt_seconds`
    /// where a view has its buckets).
    public static let rtt = HealthFamilies(rawValue: 2)
    /// sock:inet_sock_set_state: `<prefix>_connections_opened_total`,
    /// `_connections_established_total`, `_connect_failures_total`,
    /// `_connections_closed_total`, and the connect and connection duration
    /// histograms where a view has their buckets.
    public static let lifecycle = HealthFamilies(rawValue: 4)
    /// The reset tracepoints: `<prefix>_resets_total`.
    public static let resets = HealthFamilies(rawValue: 8)
    public static let all: HealthFamilies = [.retransmits, .rtt, .lifecycle, .resets]
}
