/// Per-interval bytes (and retransmits) for tcptop. The kernel (and the
/// exporter) keep cumulative counters; the original tool drained its map every interval,
/// so each output showed only that interval's bytes. Here the previous
/// counters are remembered and subtracted instead.

/// One row of a tcptop table: a connection end's bytes in one interval.
public struct TopRow: Equatable, Sendable {
    public var labels: ConnectionLabels
    public var sentBytes: UInt64
    public var receivedBytes: UInt64
    /// Segments retransmitted in the interval; nil when the source does not
    /// count them (an exporter without the family, a kernel without the hook).
    public var retransmittedSegments: UInt64?
    /// The smoothed RTT as of the interval's end; nil when unknown.
    public var smoothedRTTMicroseconds: UInt32?

    public init(labels: ConnectionLabels, sentBytes: UInt64, receivedBytes: UInt64,
                retransmittedSegments: UInt64? = nil, smoothedRTTMicroseconds: UInt32? = nil) {
        self.labels = labels
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
        self.retransmittedSegments = retransmittedSegments
        self.smoothedRTTMicroseconds = smoothedRTTMicroseconds
    }

    public var totalBytes: UInt64 { sentBytes &+ receivedBytes }
}

/// One read of one connection end's cumulative counters.
public struct TopCounterReading<Key: Hashable & Sendable>: Sendable {
    /// What identifies the counter between reads (a ConnectionID for BPF,
    /// the label set for an exporter's series).
    public var key: Key
    public var labels: ConnectionLabels
    public var sentBytes: UInt64
    public var receivedBytes: UInt64
    /// The counter is final: report it once more, then forget it.
    public var closed: Bool
    /// Cumulative retransmitted segments; nil = not counted by the source.
    public var retransmittedSegments: UInt64?
    /// The smoothed RTT as of this read; nil = unknown.
    public var smoothedRTTMicroseconds: UInt32?

    public init(key: Key, labels: ConnectionLabels, sentBytes: UInt64, receivedBytes: UInt64, closed: Bool = false,
                retransmittedSegments: UInt64? = nil, smoothedRTTMicroseconds: UInt32? = nil) {
        self.key = key
        self.labels = labels
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
        self.closed = closed
        self.retransmittedSegments = retransmittedSegments
        self.smoothedRTTMicroseconds = smoothedRTTMicroseconds
    }
}

/// Turns successive reads of cumulative counters into per-interval rows.
/// A counter first seen counts from 0 (the tracer starts counting at attach;
/// for an exporter, make a baseline read first and drop its rows). A counter
/// that went down was reset and counts from 0 again. Counters missing from a
/// read, and closed ones after being reported, are forgotten.
public struct TopIntervalCounter<Key: Hashable & Sendable>: Sendable {
    private struct Counters {
        var sent: UInt64 = 0, received: UInt64 = 0, retransmitted: UInt64 = 0
    }
    private var previous: [Key: Counters] = [:]

    public init() {}

    /// Counters remembered from the last read.
    public var trackedCount: Int { previous.count }

    /// What moved since the last call, one row per label set (connection
    /// ends with the same labels are summed, as the original keyed its map by
    /// pid and addresses). Rows where neither bytes nor retransmits moved are
    /// left out (the screen shows retransmit-only rows with -R alone). A
    /// row's RTT is its open ends' (the largest if several), else that of an
    /// end that closed in the interval, as of its close.
    public mutating func advance(_ readings: [TopCounterReading<Key>]) -> [TopRow] {
        var next: [Key: Counters] = [:]
        next.reserveCapacity(readings.count)
        var rows: [TopRow] = []
        var rowOfLabels: [ConnectionLabels: Int] = [:]
        // Rows whose RTT so far comes from an open end.
        var rttFromOpenEnd: Set<Int> = []
        func delta(_ now: UInt64, _ before: UInt64) -> UInt64 { now >= before ? now - before : now }
        for reading in readings {
            let before = previous[reading.key] ?? Counters()
            let sent = delta(reading.sentBytes, before.sent)
            let received = delta(reading.receivedBytes, before.received)
            let retransmitted = reading.retransmittedSegments.map { delta($0, before.retransmitted) }
            if !reading.closed {
                next[reading.key] = Counters(sent: reading.sentBytes, received: reading.receivedBytes,
                                             retransmitted: reading.retransmittedSegments ?? 0)
            }
            if sent == 0 && received == 0 && (retransmitted ?? 0) == 0 { continue }
            let index: Int
            if let known = rowOfLabels[reading.labels] {
                index = known
                rows[index].sentBytes &+= sent
                rows[index].receivedBytes &+= received
                if let retransmitted {
                    rows[index].retransmittedSegments = (rows[index].retransmittedSegments ?? 0) &+ retransmitted
                }
            } else {
                index = rows.count
                rowOfLabels[reading.labels] = index
                rows.append(TopRow(labels: reading.labels, sentBytes: sent, receivedBytes: received,
                                   retransmittedSegments: retransmitted))
            }
            guard let rtt = reading.smoothedRTTMicroseconds else { continue }
            let current = rows[index].smoothedRTTMicroseconds
            if reading.closed {
                if current == nil { rows[index].smoothedRTTMicroseconds = rtt }
            } else if !rttFromOpenEnd.contains(index) || rtt > current ?? 0 {
                rows[index].smoothedRTTMicroseconds = rtt
                rttFromOpenEnd.insert(index)
            }
        }
        previous = next
        return rows
    }
}

extension TopIntervalCounter where Key == ConnectionID {
    /// The tracer's samples: keyed by socket cookie and pid, closed ones
    /// final. `retransmitsCounted` is false when the kernel has no retransmit
    /// hook (then RETRANS is unknown, not 0); an RTT of 0 is unknown.
    public mutating func advance(samples: [ConnectionSample], retransmitsCounted: Bool = true) -> [TopRow] {
        advance(samples.map {
            TopCounterReading(key: $0.id, labels: $0.labels, sentBytes: $0.sentBytes,
                              receivedBytes: $0.receivedBytes, closed: $0.closed,
                              retransmittedSegments: retransmitsCounted ? $0.retransmittedSegments : nil,
                              smoothedRTTMicroseconds: $0.smoothedRTTMicroseconds == 0 ? nil : $0.smoothedRTTMicroseconds)
        })
    }
}
