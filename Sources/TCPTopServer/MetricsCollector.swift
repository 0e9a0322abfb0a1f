import Foundation
import TCPTopBPF
import TCPTopCore

/// Reads the kernel maps into the registry and renders /metrics. One read
/// or render at a time (a lock): the registry and the tracer are not
/// thread-safe, and a scrape must reflect every call that returned before
/// it began, so each scrape reads the kernel first.
public final class MetricsCollector: @unchecked Sendable {
    public struct SelfInfo: Sendable {
        public var version: String
        public var mapCapacity: UInt32
        public var attachMode: String
        public var readPath: String
        /// The kernel has the retransmit hook: its families are served.
        public var countsRetransmits: Bool
    }

    private let lock = NSLock()
    private let tracer: TCPTracer
    private var registry: ConnectionRegistry
    private let info: SelfInfo
    private var unattributed = UnattributedCounters()
    private var kernelEntries = 0
    private var missedCalls: UInt64 = 0
    private var readErrors: UInt64 = 0
    private var scrapeCount: UInt64 = 0
    private var scrapeSeconds = 0.0
    /// Its own lock, not the scrape lock: the watchdog asks it while a long
    /// queue of scrapes waits for the collector.
    private let readClockLock = NSLock()
    private var lastSuccessfulReadValue: Double
    private var lastSuccessfulRead: Double {
        get { readClockLock.withLock { lastSuccessfulReadValue } }
        set { readClockLock.withLock { lastSuccessfulReadValue = newValue } }
    }

    public init(tracer: TCPTracer, registry: ConnectionRegistry, version: String) {
        self.tracer = tracer
        self.registry = registry
        self.info = SelfInfo(version: version, mapCapacity: tracer.mapCapacity, attachMode: tracer.attachMode, readPath: tracer.readPath,
                             countsRetransmits: tracer.countsRetransmits)
        self.lastSuccessfulReadValue = monotonicSeconds()
    }

    /// Collects closed connections between scrapes, so the kernel maps keep
    /// room; when no socket closed since the last read, it only checks that.
    public func poll() throws {
        lock.lock()
        defer { lock.unlock() }
        if try tracer.hasClosesSinceLastRead() {
            try readKernel()
        } else {
            lastSuccessfulRead = monotonicSeconds()
        }
    }

    /// A reloaded retention applies from the next read on.
    public func setClosedRetention(seconds: Double) {
        lock.withLock { registry.closedRetention = seconds }
    }

    /// Seconds since the kernel was last read successfully (for the watchdog).
    public var secondsSinceLastRead: Double {
        monotonicSeconds() - lastSuccessfulRead
    }

    public var trackedConnections: Int {
        lock.lock()
        defer { lock.unlock() }
        return registry.liveEntries
    }

    /// Reads the kernel and renders every family into one buffer (tests,
    /// and callers that want the whole text).
    public func scrape() -> [UInt8] {
        var body: [UInt8] = []
        scrape { body.append(contentsOf: $0) }
        return body
    }

    /// Reads the kernel and writes every family to `sink` in pieces of about
    /// 64 KiB, rendered as they are written. A failed kernel read is counted
    /// and the last known values are served (never invented ones).
    ///
    /// The lock is held only to read the kernel, update the registry and
    /// take a snapshot; the sink is called without it, so a client that
    /// reads slowly (or never) does not stall the poll that reads the
    /// kernel. A sink error (the client went away) is rethrown.
    public func scrape(into sink: (ArraySlice<UInt8>) throws -> Void) rethrows {
        let start = monotonicSeconds()
        let (snapshot, selfMetrics) = lock.withLock {
            do { try readKernel() } catch { readErrors += 1 }
            return (registry.snapshot(), selfMetricsSnapshot())
        }
        var trailer = ExpositionWriter(reservingCapacity: 8192)
        selfMetrics.write(into: &trailer)
        ProcessMetrics.read()?.write(into: &trailer)
        var sinkSeconds = 0.0
        defer {
            let seconds = monotonicSeconds() - start - sinkSeconds
            lock.withLock {
                scrapeCount += 1
                scrapeSeconds += seconds
            }
        }
        try snapshot.write(trailer: trailer.bytes) { piece in
            let before = monotonicSeconds()
            defer { sinkSeconds += monotonicSeconds() - before }
            try sink(piece)
        }
    }

    private func readKernel() throws {
        let reading = try tracer.read()
        let now = monotonicSeconds()
        registry.update(with: reading.connections, now: now)
        unattributed = reading.unattributed
        kernelEntries = reading.liveSockets
        missedCalls = reading.missedCalls
        lastSuccessfulRead = now
    }

    private func selfMetricsSnapshot() -> SelfMetrics {
        SelfMetrics(info: info, unattributed: unattributed, kernelEntries: kernelEntries, missedCalls: missedCalls,
                    readErrors: readErrors, scrapeCount: scrapeCount, scrapeSeconds: scrapeSeconds,
                    liveEntries: registry.liveEntries, views: registry.viewStatistics,
                    missedRuns: tracer.programStats().map { ($0.name, $0.missedRuns) })
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
