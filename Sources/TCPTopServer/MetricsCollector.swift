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
        self.info = SelfInfo(version: version, mapCapacity: tracer.mapCapacity, attachMode: tracer.attachMode, readPath: tracer.readPath)
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

    /// Reads the kernel and renders every family. A failed kernel read is
    /// counted and the last known values are served (never invented ones).
    public func scrape() -> [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        let start = monotonicSeconds()
        do { try readKernel() } catch { readErrors += 1 }
        var writer = ExpositionWriter(reservingCapacity: 16384)  // render() reserves what the series need
        registry.render(into: &writer)
        writeSelfMetrics(into: &writer)
        ProcessMetrics.read()?.write(into: &writer)
        scrapeCount += 1
        scrapeSeconds += monotonicSeconds() - start
        return writer.bytes
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

    private func writeSelfMetrics(into writer: inout ExpositionWriter) {
        writer.family(name: "tcptop_unattributed_bytes_total",
                      help: "TCP payload bytes counted while the kernel map was full, so not attributed to a connection.",
                      type: .counter)
        writer.sample(name: "tcptop_unattributed_bytes_total", labels: [("direction", "sent")], value: unattributed.sentBytes)
        writer.sample(name: "tcptop_unattributed_bytes_total", labels: [("direction", "received")], value: unattributed.receivedBytes)
        writer.family(name: "tcptop_unattributed_events_total",
                      help: "Send and receive calls counted while the kernel map was full.", type: .counter)
        writer.sample(name: "tcptop_unattributed_events_total", labels: [("direction", "sent")], value: unattributed.sendEvents)
        writer.sample(name: "tcptop_unattributed_events_total", labels: [("direction", "received")], value: unattributed.receiveEvents)

        writer.family(name: "tcptop_exporter_build_info", help: "A metric with a constant 1 labelled by version.", type: .gauge)
        writer.sample(name: "tcptop_exporter_build_info", labels: [("version", info.version)], value: UInt64(1))
        writer.family(name: "tcptop_exporter_attach_mode",
                      help: "The kernel hooks that count the bytes (mode) and how the counters are read (read_path), as chosen at start (constant 1).",
                      type: .gauge)
        writer.sample(name: "tcptop_exporter_attach_mode", labels: [("mode", info.attachMode), ("read_path", info.readPath)],
                      value: UInt64(1))
        writer.family(name: "tcptop_exporter_map_capacity", help: "Sockets (and shared connection ends) the kernel side can track; past it, bytes are unattributed.", type: .gauge)
        writer.sample(name: "tcptop_exporter_map_capacity", value: UInt64(info.mapCapacity))
        writer.family(name: "tcptop_exporter_map_entries", help: "Sockets tracked in the kernel at the last read.", type: .gauge)
        writer.sample(name: "tcptop_exporter_map_entries", value: UInt64(kernelEntries))
        writer.family(name: "tcptop_exporter_closes_not_recorded_total",
                      help: "Socket closes whose final counts did not fit the closed map; their last bytes went to tcptop_unattributed_bytes_total.",
                      type: .counter)
        writer.sample(name: "tcptop_exporter_closes_not_recorded_total", value: unattributed.closesNotRecorded)
        writer.family(name: "tcptop_exporter_connections", help: "Open connection ends held by the exporter (closed ones live on in their series).", type: .gauge)
        writer.sample(name: "tcptop_exporter_connections", value: UInt64(registry.liveEntries))
        let views = registry.viewStatistics
        writer.family(name: "tcptop_exporter_series", help: "Series per view (per family), overflow series included.", type: .gauge)
        for view in views { writer.sample(name: "tcptop_exporter_series", labels: [("view", view.prefix)], value: UInt64(view.series)) }
        writer.family(name: "tcptop_exporter_overflowed_label_sets",
                      help: "Label sets past a view's max_series, summed into its overflow series.", type: .gauge)
        for view in views {
            writer.sample(name: "tcptop_exporter_overflowed_label_sets", labels: [("view", view.prefix)], value: UInt64(view.overflowedLabelSets))
        }
        writer.family(name: "tcptop_exporter_kprobe_missed_calls_total",
                      help: "kprobe mode: calls whose return the kernel did not report (too many threads blocked at once); counted as unattributed events.",
                      type: .counter)
        writer.sample(name: "tcptop_exporter_kprobe_missed_calls_total", value: missedCalls)
        writer.family(name: "tcptop_exporter_kernel_read_errors_total", help: "Failed reads of the kernel maps.", type: .counter)
        writer.sample(name: "tcptop_exporter_kernel_read_errors_total", value: readErrors)
        writer.family(name: "tcptop_exporter_scrapes_total", help: "Scrapes of the telemetry path answered.", type: .counter)
        writer.sample(name: "tcptop_exporter_scrapes_total", value: scrapeCount)
        writer.family(name: "tcptop_exporter_scrape_duration_seconds_total",
                      help: "Time spent reading the kernel maps and rendering, over all previous scrapes.", type: .counter)
        writer.sample(name: "tcptop_exporter_scrape_duration_seconds_total", value: scrapeSeconds)
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
