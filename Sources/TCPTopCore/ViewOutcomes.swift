/// One view's connection outcomes (opened, established, failed connects,
/// closed, resets) and its histograms, by series slot. Each fact is counted
/// once per connection end (the registry's entry remembers what it
/// counted). An open end's role and establishment stay in its entry's bits
/// and are summed at a snapshot, like its bytes, and folded into its
/// series' record when it closes: most series of a per-connection view are
/// open ends and have no record. Failures, resets and observations go into
/// the record (or the failures table) when a read first shows them.
struct ViewOutcomes: Sendable {
    /// The cells of a series' outcome record.
    enum Cell: Int {
        /// The first `liveCells` are also an open end's bits, summed at a snapshot.
        case openedClient, openedServer, established, closed, resetsSent, resetsReceived
    }
    static let liveCells = 3

    let opened: FamilyText
    let established: FamilyText
    let failures: FamilyText
    let closed: FamilyText
    let resets: FamilyText
    private(set) var counts = SlotRecords(stride: 6)
    /// Failed connects by series slot and reason (a code of the registry's `FailureReasons`).
    private(set) var failureCounts: [FailureKey: UInt64] = [:]
    private(set) var connect: SlotHistogram?
    private(set) var lifetime: SlotHistogram?
    private(set) var rtt: SlotHistogram?

    struct FailureKey: Hashable, Sendable {
        var slot: Int32
        var reason: UInt16
    }

    init(config: ViewConfig) {
        let prefix = config.prefix
        opened = FamilyText(name: "\(prefix)_connections_opened_total", help: ConnectionRegistry.openedHelp, type: .counter)
        established = FamilyText(
            name: "\(prefix)_connections_established_total", help: ConnectionRegistry.establishedHelp, type: .counter)
        failures = FamilyText(name: "\(prefix)_connect_failures_total", help: ConnectionRegistry.failuresHelp, type: .counter)
        closed = FamilyText(name: "\(prefix)_connections_closed_total", help: ConnectionRegistry.closedHelp, type: .counter)
        resets = FamilyText(name: "\(prefix)_resets_total", help: ConnectionRegistry.resetsHelp, type: .counter)
        connect = config.connectDurationBuckets.map {
            SlotHistogram(name: "\(prefix)_connect_duration_seconds", help: ConnectionRegistry.connectDurationHelp, bounds: $0)
        }
        lifetime = config.connectionDurationBuckets.map {
            SlotHistogram(name: "\(prefix)_connection_duration_seconds", help: ConnectionRegistry.lifetimeHelp, bounds: $0)
        }
        rtt = config.rttBuckets.map {
            SlotHistogram(name: "\(prefix)_connection_rtt_seconds", help: ConnectionRegistry.closedRTTHelp, bounds: $0)
        }
    }

    mutating func count(_ cell: Cell, _ value: UInt64 = 1, slot: Int) {
        counts.add(value, at: cell.rawValue, of: slot)
    }

    /// A closing end's role and establishment, and its close, in one record access.
    mutating func fold(_ facts: EntryFacts, closedIn slot: Int) {
        counts.add(1, at: Cell.closed.rawValue, of: slot)
        if facts.contains(.roleCounted) {
            counts.add(1, at: (facts.contains(.server) ? Cell.openedServer : Cell.openedClient).rawValue, of: slot)
        }
        if facts.contains(.established) { counts.add(1, at: Cell.established.rawValue, of: slot) }
    }

    mutating func countFailure(reason: UInt16, slot: Int) {
        failureCounts[FailureKey(slot: Int32(slot), reason: reason), default: 0] &+= 1
    }

    mutating func observeConnect(_ microseconds: UInt64, slot: Int) { connect?.observe(microseconds, slot: slot) }
    mutating func observeLifetime(_ microseconds: UInt64, slot: Int) { lifetime?.observe(microseconds, slot: slot) }
    mutating func observeClosedRTT(_ microseconds: UInt64, slot: Int) { rtt?.observe(microseconds, slot: slot) }

    /// Expired series: each slot's records are dropped (target nil) or moved
    /// into its target (an overflowed label set into the overflow series).
    /// One pass over the failures for all of them.
    mutating func expire(_ fates: [(slot: Int, target: Int?)]) {
        guard !fates.isEmpty else { return }
        for (slot, target) in fates {
            if let target {
                counts.merge(slot, into: target)
                connect?.merge(slot, into: target)
                lifetime?.merge(slot, into: target)
                rtt?.merge(slot, into: target)
            } else {
                counts.free(slot)
                connect?.free(slot)
                lifetime?.free(slot)
                rtt?.free(slot)
            }
        }
        guard !failureCounts.isEmpty else { return }
        var targets: [Int32: Int32] = [:]  // -1: dropped
        for (slot, target) in fates { targets[Int32(slot)] = target.map(Int32.init) ?? -1 }
        var kept: [FailureKey: UInt64] = [:]
        kept.reserveCapacity(failureCounts.count)
        for (key, value) in failureCounts {
            guard let target = targets[key.slot] else {
                kept[key, default: 0] &+= value
                continue
            }
            if target >= 0 { kept[FailureKey(slot: target, reason: key.reason), default: 0] &+= value }
        }
        failureCounts = kept
    }
}

/// The reasons of failed connects as label values, coded once for the registry's views.
struct FailureReasons: Sendable {
    private var codes: [Int32: UInt16] = [:]
    /// `reason="refused"` and so on, by code.
    private(set) var labelTexts: [[UInt8]] = []

    mutating func code(of lifecycle: ConnectionLifecycle) -> UInt16 {
        if let code = codes[lifecycle.connectError] { return code }
        let code = UInt16(labelTexts.count)
        codes[lifecycle.connectError] = code
        labelTexts.append(Array("reason=\"".utf8) + escapedLabelValue(lifecycle.failureReason ?? "none") + [UInt8(ascii: "\"")])
        return code
    }
}

/// What the registry remembers of an entry's lifecycle: which facts it
/// already counted (a read repeats them until the end closes).
struct EntryFacts: OptionSet {
    let rawValue: UInt8
    /// Its role is known (client unless `server`) and established was seen:
    /// summed into its series at a snapshot while it is open, folded at its close.
    static let roleCounted = EntryFacts(rawValue: 1)
    static let established = EntryFacts(rawValue: 2)
    static let failureCounted = EntryFacts(rawValue: 4)
    static let connectObserved = EntryFacts(rawValue: 8)
    static let lifetimeObserved = EntryFacts(rawValue: 16)
    /// The entry's reset counts are in the registry's side table (one went past 254).
    static let largeResets = EntryFacts(rawValue: 32)
    static let server = EntryFacts(rawValue: 64)
}

extension ConnectionRegistry {
    public static let openedHelp =
        "Connection ends opened while traced, once per end, by role: client (connect) or server (accept). "
        + "A role no end of these labels had has no sample."
    public static let establishedHelp =
        "Connection ends that reached ESTABLISHED while traced, once per end (no sample while none did)."
    public static let failuresHelp =
        "Failed connects (SYN_SENT to CLOSE), once per client end, by reason: refused, timeout, reset, "
        + "aborted (closed while connecting), host_unreachable, network_unreachable or errno_N. "
        + "A reason no end of these labels had has no sample."
    public static let closedHelp =
        "Connection ends that closed while traced, once per end: those opened before the tracer started "
        + "and those of other processes sharing a socket included (no sample while none did)."
    public static let resetsHelp =
        "TCP resets sent and received on the socket's owner's end (tcp:tcp_send_reset, tcp:tcp_receive_reset), "
        + "by direction. A direction without any has no sample."
    public static let connectDurationHelp =
        "Connect times of client ends, SYN sent to ESTABLISHED, in seconds: one observation per end."
    public static let lifetimeHelp =
        "Lifetimes of connection ends, ESTABLISHED to closed, in seconds: one observation per end at its close."
    public static let closedRTTHelp =
        "The smoothed RTT (srtt) of connection ends at their close, in seconds: one observation per end that had one."
}
