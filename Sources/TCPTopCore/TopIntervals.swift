/// Per-interval bytes for tcptop. The kernel (and the exporter) keep
/// cumulative counters; the original tool drained its map every interval,
/// so each output showed only that interval's bytes. Here the previous
/// counters are remembered and subtracted instead.

/// One row of a tcptop table: a connection end's bytes in one interval.
public struct TopRow: Equatable, Sendable {
    public var labels: ConnectionLabels
    public var sentBytes: UInt64
    public var receivedBytes: UInt64

    public init(labels: ConnectionLabels, sentBytes: UInt64, receivedBytes: UInt64) {
        self.labels = labels
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
    }

    public var totalBytes: UInt64 { sentBytes &+ receivedBytes }
}

/// One read of one cumulative counter pair.
public struct TopCounterReading<Key: Hashable & Sendable>: Sendable {
    /// What identifies the counter between reads (a ConnectionID for BPF,
    /// the label set for an exporter's series).
    public var key: Key
    public var labels: ConnectionLabels
    public var sentBytes: UInt64
    public var receivedBytes: UInt64
    /// The counter is final: report it once more, then forget it.
    public var closed: Bool

    public init(key: Key, labels: ConnectionLabels, sentBytes: UInt64, receivedBytes: UInt64, closed: Bool = false) {
        self.key = key
        self.labels = labels
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
        self.closed = closed
    }
}

/// Turns successive reads of cumulative counters into per-interval rows.
/// A counter first seen counts from 0 (the tracer starts counting at attach;
/// for an exporter, make a baseline read first and drop its rows). A counter
/// that went down was reset and counts from 0 again. Counters missing from a
/// read, and closed ones after being reported, are forgotten.
public struct TopIntervalCounter<Key: Hashable & Sendable>: Sendable {
    private var previous: [Key: (sent: UInt64, received: UInt64)] = [:]

    public init() {}

    /// Counters remembered from the last read.
    public var trackedCount: Int { previous.count }

    /// The bytes moved since the last call, one row per label set (connection
    /// ends with the same labels are summed, as the original keyed its map by
    /// pid and addresses). Rows without bytes are left out.
    public mutating func advance(_ readings: [TopCounterReading<Key>]) -> [TopRow] {
        var next: [Key: (sent: UInt64, received: UInt64)] = [:]
        next.reserveCapacity(readings.count)
        var rows: [TopRow] = []
        var rowOfLabels: [ConnectionLabels: Int] = [:]
        for reading in readings {
            let before = previous[reading.key] ?? (0, 0)
            let sent = reading.sentBytes >= before.sent ? reading.sentBytes - before.sent : reading.sentBytes
            let received = reading.receivedBytes >= before.received
                ? reading.receivedBytes - before.received : reading.receivedBytes
            if !reading.closed { next[reading.key] = (reading.sentBytes, reading.receivedBytes) }
            if sent == 0 && received == 0 { continue }
            if let index = rowOfLabels[reading.labels] {
                rows[index].sentBytes &+= sent
                rows[index].receivedBytes &+= received
            } else {
                rowOfLabels[reading.labels] = rows.count
                rows.append(TopRow(labels: reading.labels, sentBytes: sent, receivedBytes: received))
            }
        }
        previous = next
        return rows
    }
}

extension TopIntervalCounter where Key == ConnectionID {
    /// The tracer's samples: keyed by socket cookie and pid, closed ones final.
    public mutating func advance(samples: [ConnectionSample]) -> [TopRow] {
        advance(samples.map {
            TopCounterReading(key: $0.id, labels: $0.labels, sentBytes: $0.sentBytes,
                              receivedBytes: $0.receivedBytes, closed: $0.closed)
        })
    }
}
