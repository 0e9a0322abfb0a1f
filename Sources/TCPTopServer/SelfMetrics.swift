import TCPTopCore

/// The collector's own metrics as of a scrape's snapshot, written after
/// the collector's lock is released.
struct SelfMetrics {
    var info: MetricsCollector.SelfInfo
    var unattributed: UnattributedCounters
    var kernelEntries: Int
    var missedCalls: UInt64
    var readErrors: UInt64
    /// Scrapes answered before this one, and their time.
    var scrapeCount: UInt64
    var scrapeSeconds: Double
    var liveEntries: Int
    var views: [ConnectionRegistry.ViewStatistics]
    /// Per loaded program: runs the kernel skipped (nested on one CPU).
    var missedRuns: [(program: String, count: UInt64)]

    func write(into writer: inout ExpositionWriter) {
        writer.family(name: "tcptop_unattributed_bytes_total",
                      help: "TCP payload bytes counted while the kernel map was full, so not attributed to a connection.",
                      type: .counter)
        writer.sample(name: "tcptop_unattributed_bytes_total", labels: [("direction", "sent")], value: unattributed.sentBytes)
        writer.sample(name: "tcptop_unattributed_bytes_total", labels: [("direction", "received")], value: unattributed.receivedBytes)
        writer.family(name: "tcptop_unattributed_events_total",
                      help: "Send and receive calls counted while the kernel map was full.", type: .counter)
        writer.sample(name: "tcptop_unattributed_events_total", labels: [("direction", "sent")], value: unattributed.sendEvents)
        writer.sample(name: "tcptop_unattributed_events_total", labels: [("direction", "received")], value: unattributed.receiveEvents)
        if info.countsRetransmits {
            writer.family(name: "tcptop_unattributed_retransmitted_segments_total",
                          help: "TCP segments retransmitted on sockets no tracked process had moved bytes on (a SYN sent again, or the kernel map full).",
                          type: .counter)
            writer.sample(name: "tcptop_unattributed_retransmitted_segments_total", value: unattributed.retransmittedSegments)
        }

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
        writer.sample(name: "tcptop_exporter_connections", value: UInt64(liveEntries))
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
        writer.family(name: "tcptop_exporter_bpf_missed_runs_total",
                      help: "Runs of a BPF program the kernel skipped because it was already running on that CPU (an event in softirq while it ran for a process): those events were not seen (Linux >= 5.12 counts them).",
                      type: .counter)
        for (program, count) in missedRuns {
            writer.sample(name: "tcptop_exporter_bpf_missed_runs_total", labels: [("program", program)], value: count)
        }
        writer.family(name: "tcptop_exporter_kernel_read_errors_total", help: "Failed reads of the kernel maps.", type: .counter)
        writer.sample(name: "tcptop_exporter_kernel_read_errors_total", value: readErrors)
        writer.family(name: "tcptop_exporter_scrapes_total", help: "Scrapes of the telemetry path answered.", type: .counter)
        writer.sample(name: "tcptop_exporter_scrapes_total", value: scrapeCount)
        writer.family(name: "tcptop_exporter_scrape_duration_seconds_total",
                      help: "Time spent reading the kernel maps and rendering, over all previous scrapes.", type: .counter)
        writer.sample(name: "tcptop_exporter_scrape_duration_seconds_total", value: scrapeSeconds)
    }
}
