import Glibc

/// One client connection as the event loop holds it: a few words, and the
/// bytes of a request head while one is arriving (nothing while idle).
struct HTTPConnectionSlot {
    enum Phase { case awaitingHead, idle, busy, lingering }
    var phase: Phase
    /// How its bytes move: plain, or through TLS (whose handshake the loop drives).
    var transport: HTTPTransport
    /// Waiting for the socket to be writable (a TLS handshake step), not readable.
    var wantsWrite = false
    /// New with every phase; a deadline entry is void once its stamp is old.
    var stamp: UInt64
    /// Monotonic nanoseconds (see `monotonicNanoseconds`).
    var deadline: UInt64
    var buffer: [UInt8] = []
    /// Whether a byte of the current request arrived (a silent new connection is closed without a 408).
    var received = false
    /// Bytes dropped while lingering.
    var discarded = 0
}

/// Connections of one kind in deadline order. Every connection of a kind
/// has the same timeout, so the order of entry is the order of deadlines:
/// a FIFO is enough, and its front is also the oldest (the first evicted).
/// Entries are not removed when a connection changes phase; they go stale
/// (their stamp no longer matches) and are dropped when they reach the front.
struct HTTPDeadlineQueue {
    private var entries: [(fd: Int32, stamp: UInt64)] = []
    private var start = 0

    mutating func append(_ fd: Int32, _ stamp: UInt64) {
        entries.append((fd, stamp))
    }

    /// The first entry still valid for `slots`, dropping stale ones before it.
    mutating func front(in slots: [Int32: HTTPConnectionSlot]) -> Int32? {
        while start < entries.count {
            let entry = entries[start]
            if slots[entry.fd]?.stamp == entry.stamp { return entry.fd }
            removeFront()
        }
        return nil
    }

    mutating func removeFront() {
        start += 1
        if start == entries.count {
            entries.removeAll(keepingCapacity: entries.count < 4096)
            start = 0
        } else if start >= 1024, start * 2 >= entries.count {
            entries.removeFirst(start)
            start = 0
        }
    }
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds, saturated (configured timeouts may be absurd).
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (scaled, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? UInt64.max / 2 : min(UInt64.max / 2, scaled + UInt64(attoseconds / 1_000_000_000))
    }
}
