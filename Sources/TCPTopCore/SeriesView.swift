/// The series of one view. Each connection end is given its series slot
/// when it is inserted, so a scrape sums with array indexes and never
/// hashes label sets. Slots are reused through a free list.
///
/// A series is kept while it has members (connection ends) or was active
/// within the retention; the final counts of members that expire are folded
/// into the series' base so its value never goes backwards.
///
/// A struct the registry mutates in place: its fields are then checked for
/// exclusive access once per call, not once per array touched (that was a
/// tenth of a first big read).
struct SeriesView {
    enum SlotState {
        case free
        /// A label set rendered as its own series.
        case own
        /// A label set past `maxSeries`: counted, but rendered inside the overflow series.
        case overflowed
        /// The one overflow series; its members are the overflowed label sets.
        case overflow
    }

    let config: ViewConfig
    let health: HealthFamilies
    /// Name and `# HELP` / `# TYPE` lines of each family rendered.
    let sent: FamilyText
    let received: FamilyText
    let retransmits: FamilyText
    let rtt: FamilyText
    /// What the stored label values are rendered between.
    let layout: LabelLayout
    let overflowLabelText: [UInt8]
    /// Connection outcomes and histograms, by slot (records only for the series that have some).
    private(set) var outcomes: ViewOutcomes

    /// The slot of each registry entry, parallel to the registry's entry array.
    private(set) var slotOfEntry: [Int32] = []

    // Per slot.
    private(set) var state: [SlotState] = []
    private(set) var labelTexts = LabelTextStore()
    private(set) var baseSent: [UInt64] = []
    private(set) var baseReceived: [UInt64] = []
    private(set) var baseRetransmits: [UInt64] = []
    private var memberCount: [Int32] = []
    private var lastActivity: [Double] = []

    private var freeSlots: [Int32] = []
    private(set) var overflowSlot: Int32?
    private(set) var ownSeriesCount = 0
    private(set) var overflowedLabelSetCount = 0
    /// Label texts of a batch of new members, built ahead (`prepare`).
    private var prepared: [UInt8] = []
    private var preparedEnds: [Int] = []
    private var preparedHashes: [Int] = []

    init(config: ViewConfig, health: HealthFamilies) {
        self.config = config
        self.health = health
        sent = FamilyText(name: "\(config.prefix)_sent_bytes_total", help: ConnectionRegistry.sentHelp, type: .counter)
        received = FamilyText(
            name: "\(config.prefix)_received_bytes_total", help: ConnectionRegistry.receivedHelp, type: .counter)
        retransmits = FamilyText(
            name: "\(config.prefix)_retransmitted_segments_total", help: ConnectionRegistry.retransmitsHelp, type: .counter)
        rtt = FamilyText(name: "\(config.prefix)_rtt_seconds", help: ConnectionRegistry.rttHelp, type: .gauge)
        layout = LabelLayout(names: config.labels.map(\.rawValue))
        outcomes = ViewOutcomes(config: config)
        var overflow: [UInt8] = []
        for _ in config.labels { LabelLayout.appendValue(Array("__overflow__".utf8), to: &overflow) }
        overflowLabelText = overflow
    }

    /// Room for `count` members without a doubling chain on a first big read.
    mutating func reserveMembers(_ count: Int) {
        if count > slotOfEntry.capacity { slotOfEntry.reserveCapacity(count) }
    }

    var renderedSeriesCount: Int { ownSeriesCount + (overflowSlot == nil ? 0 : 1) }

    // MARK: Membership

    /// Builds the label texts of a batch of new members (connection ends
    /// about to be appended to the registry's entries) and touches their
    /// index entries, so that their cache misses overlap; then
    /// `addPreparedMember` adds each in turn.
    /// `attributions`: one per member when some view keeps a label made
    /// from the cgroup, uid or remote address (else empty).
    mutating func prepare(_ batch: ArraySlice<ConnectionSample>, attributions: [EndAttribution]) -> Int32 {
        var text: [UInt8] = []
        swap(&text, &prepared)  // built in a local: no access check per byte
        text.removeAll(keepingCapacity: true)
        preparedEnds.removeAll(keepingCapacity: true)
        preparedHashes.removeAll(keepingCapacity: true)
        for (offset, sample) in batch.enumerated() {
            let start = text.count
            fillLabelText(for: sample.labels, role: sample.lifecycle.role,
                          attribution: attributions.isEmpty ? nil : attributions[offset], into: &text)
            preparedEnds.append(text.count)
            preparedHashes.append(LabelTextStore.hash(text[start...]))
        }
        swap(&text, &prepared)
        // A tight loop of independent loads: their misses overlap.
        var touched: Int32 = 0
        for hash in preparedHashes { touched &+= labelTexts.touch(hash: hash) }
        return touched
    }

    /// Adds the `index`th member of the prepared batch (appended to the registry's entries).
    mutating func addPreparedMember(_ index: Int, now: Double) {
        let text = prepared[(index == 0 ? 0 : preparedEnds[index - 1])..<preparedEnds[index]]
        let hash = preparedHashes[index]
        // Own and overflowed label sets are found by their escaped values (escaping is injective).
        let slot = labelTexts.slot(for: text, hash: hash) ?? newLabelSet(text, hash: hash)
        memberCount[Int(slot)] += 1
        slotOfEntry.append(slot)
        touch(slot: slot, now: now)
    }

    /// The member at `entryIndex` changed its counters.
    mutating func touchMember(at entryIndex: Int, now: Double) {
        touch(slot: slotOfEntry[entryIndex], now: now)
    }

    /// The member at `entryIndex` expired: its final counts go into the base,
    /// then it is removed the way the registry removes it (last moves into its place).
    mutating func removeMember(at entryIndex: Int, finalSent: UInt64, finalReceived: UInt64, finalRetransmits: UInt64) {
        let slot = Int(slotOfEntry[entryIndex])
        baseSent[slot] &+= finalSent
        baseReceived[slot] &+= finalReceived
        baseRetransmits[slot] &+= finalRetransmits
        memberCount[slot] -= 1
        slotOfEntry[entryIndex] = slotOfEntry[slotOfEntry.count - 1]
        slotOfEntry.removeLast()
    }

    /// A fact of the member at `entryIndex` counted in its series (activity too).
    mutating func countOutcome(_ cell: ViewOutcomes.Cell, _ value: UInt64 = 1, member entryIndex: Int, now: Double) {
        let slot = slotOfEntry[entryIndex]
        outcomes.count(cell, value, slot: Int(slot))
        touch(slot: slot, now: now)
    }

    /// The member at `entryIndex` closes: its facts and its close go into its series' record.
    mutating func foldClosing(_ facts: EntryFacts, member entryIndex: Int, now: Double) {
        let slot = slotOfEntry[entryIndex]
        outcomes.fold(facts, closedIn: Int(slot))
        touch(slot: slot, now: now)
    }

    mutating func countFailure(reason: UInt16, member entryIndex: Int, now: Double) {
        let slot = slotOfEntry[entryIndex]
        outcomes.countFailure(reason: reason, slot: Int(slot))
        touch(slot: slot, now: now)
    }

    enum Observed { case connect, lifetime, closedRTT }

    mutating func observe(_ histogram: Observed, _ microseconds: UInt64, member entryIndex: Int) {
        let slot = Int(slotOfEntry[entryIndex])
        switch histogram {
        case .connect: outcomes.observeConnect(microseconds, slot: slot)
        case .lifetime: outcomes.observeLifetime(microseconds, slot: slot)
        case .closedRTT: outcomes.observeClosedRTT(microseconds, slot: slot)
        }
    }

    var hasClosedRTTHistogram: Bool { outcomes.rtt != nil }

    private mutating func touch(slot: Int32, now: Double) {
        lastActivity[Int(slot)] = now
        if state[Int(slot)] == .overflowed, let overflowSlot {
            lastActivity[Int(overflowSlot)] = now
        }
    }

    private mutating func newLabelSet(_ text: ArraySlice<UInt8>, hash: Int) -> Int32 {
        let full = config.maxSeries > 0 && ownSeriesCount >= config.maxSeries
        // A real label set that reads like the overflow one joins it rather than duplicating it
        // (a view without labels has one label set, its own: the empty text is not overflow).
        let overflowed = full || (!config.labels.isEmpty && text.elementsEqual(overflowLabelText))
        let slot = allocateSlot(text, hash: hash, state: overflowed ? .overflowed : .own)
        if overflowed {
            let overflow = overflowSlot ?? allocateSlot(overflowLabelText[...], hash: nil, state: .overflow)
            overflowSlot = overflow
            memberCount[Int(overflow)] += 1
            overflowedLabelSetCount += 1
        } else {
            ownSeriesCount += 1
        }
        return slot
    }

    // MARK: Expiry

    /// Removes series without members whose last activity is `retention` or more ago.
    /// An overflowed label set hands its base to the overflow series first.
    mutating func expireSeries(now: Double, retention: Double) {
        var fates: [(slot: Int, target: Int?)] = []
        for slot in state.indices where state[slot] == .own || state[slot] == .overflowed {
            guard memberCount[slot] == 0, now - lastActivity[slot] >= retention else { continue }
            let overflow = state[slot] == .overflowed ? overflowSlot.map(Int.init) : nil
            fates.append((slot, overflow))
            if let overflow {
                baseSent[overflow] &+= baseSent[slot]
                baseReceived[overflow] &+= baseReceived[slot]
                baseRetransmits[overflow] &+= baseRetransmits[slot]
                memberCount[overflow] -= 1
                overflowedLabelSetCount -= 1
            } else {
                ownSeriesCount -= 1
            }
            freeSlot(slot)
        }
        if let overflow = overflowSlot.map(Int.init), memberCount[overflow] == 0,
           now - lastActivity[overflow] >= retention {
            freeSlot(overflow)
            overflowSlot = nil
            fates.append((overflow, nil))
        }
        outcomes.expire(fates)
    }

    // MARK: Slots

    private mutating func allocateSlot(_ text: ArraySlice<UInt8>, hash: Int?, state newState: SlotState) -> Int32 {
        // The overflow series is never looked up by its text.
        let indexed = newState != .overflow
        if let slot = freeSlots.popLast() {
            let index = Int(slot)
            state[index] = newState
            labelTexts.set(slot: index, text: text, indexed: indexed, hash: hash)
            return slot
        }
        labelTexts.set(slot: state.count, text: text, indexed: indexed, hash: hash)
        state.append(newState)
        baseSent.append(0)
        baseReceived.append(0)
        baseRetransmits.append(0)
        memberCount.append(0)
        lastActivity.append(0)
        return Int32(state.count - 1)
    }

    private mutating func freeSlot(_ slot: Int) {
        labelTexts.clear(slot: slot)
        state[slot] = .free
        baseSent[slot] = 0
        baseReceived[slot] = 0
        baseRetransmits[slot] = 0
        memberCount[slot] = 0
        freeSlots.append(Int32(slot))
    }

    // MARK: Labels

    /// The member's escaped label values as `LabelLayout` stores them,
    /// appended to `text`: this runs for every new connection end in every view.
    private func fillLabelText(for labels: ConnectionLabels, role: ConnectionLifecycle.Role, attribution: EndAttribution?,
                               into text: inout [UInt8]) {
        let ephemeralLocal = config.ephemeralClientPort && role == .client
        let ephemeralRemote = config.ephemeralClientPort && role == .server
        for label in config.labels {
            switch label {
            case .pid: LabelLayout.appendDecimal(UInt64(labels.pid), to: &text)
            case .comm: LabelLayout.appendValue(escapedLabelValue(labels.comm), to: &text)
            case .family: LabelLayout.appendValue(labels.family == .ipv4 ? ipv4Name : ipv6Name, to: &text)
            case .laddr: LabelLayout.appendText(labels.localAddress, to: &text)
            case .lport:
                if ephemeralLocal { LabelLayout.appendValue(ephemeralName, to: &text) }
                else { LabelLayout.appendDecimal(UInt64(labels.localPort), to: &text) }
            case .raddr: LabelLayout.appendText(labels.remoteAddress, to: &text)
            case .rport:
                if ephemeralRemote { LabelLayout.appendValue(ephemeralName, to: &text) }
                else { LabelLayout.appendDecimal(UInt64(labels.remotePort), to: &text) }
            case .role: LabelLayout.appendValue(roleNames[Int(role.rawValue)], to: &text)
            case .uid:
                if labels.uid == ConnectionLabels.unknownUID { LabelLayout.appendValue([], to: &text) }
                else { LabelLayout.appendDecimal(UInt64(labels.uid), to: &text) }
            case .unit: LabelLayout.appendText(attribution?.cgroup.unit ?? "", to: &text)
            case .cgroup: LabelLayout.appendText(attribution?.cgroup.path ?? "", to: &text)
            case .container: LabelLayout.appendText(attribution?.cgroup.container ?? "", to: &text)
            case .user: LabelLayout.appendText(attribution?.user ?? "", to: &text)
            case .remoteNetwork: LabelLayout.appendText(attribution?.remoteNetwork ?? "", to: &text)
            }
        }
    }
}

/// The labels of a new end that are made from what the kernel captured
/// (its cgroup id, uid and remote address), resolved once for every view.
struct EndAttribution {
    var cgroup: CgroupAttribution
    var user: String
    var remoteNetwork: String

    /// Whether a view keeping `labels` needs them.
    static func isNeeded(by labels: [ConnectionLabel]) -> Bool {
        labels.contains { [.unit, .cgroup, .container, .user, .remoteNetwork].contains($0) }
    }
}

/// A view's label text is stored as its escaped values only, each after a
/// length byte; the `{name="` ... `",name="` ... `"}` between them is the
/// view's and is written at render time. That halves the text a series
/// keeps (~45 bytes instead of ~105 with every label).
struct LabelLayout: Sendable {
    /// Piece `i` comes before value `i`; the last piece closes the set.
    /// All pieces in one array: piece `i` is `bytes[offsets[i]..<offsets[i + 1]]`.
    private let bytes: [UInt8]
    private let offsets: [Int]
    var piecesBytes: Int { bytes.count }

    init(names: [String]) {
        var bytes: [UInt8] = []
        var offsets = [0]
        for (position, name) in names.enumerated() {
            bytes += Array((position == 0 ? "{" : "\",").utf8) + Array(name.utf8) + Array("=\"".utf8)
            offsets.append(bytes.count)
        }
        if !names.isEmpty { bytes += Array("\"}".utf8) }
        offsets.append(bytes.count)
        self.bytes = bytes
        self.offsets = offsets
    }

    /// The pieces as raw memory, for the render loop.
    struct Pieces {
        let bytes: UnsafeRawBufferPointer
        let offsets: UnsafeBufferPointer<Int>
        var labelCount: Int { offsets.count - 2 }

        @inline(__always)
        func piece(_ index: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: bytes[offsets[index]..<offsets[index + 1]])
        }
    }

    func withPieces<R>(_ body: (Pieces) -> R) -> R {
        bytes.withUnsafeBytes { bytes in
            offsets.withUnsafeBufferPointer { body(Pieces(bytes: bytes, offsets: $0)) }
        }
    }

    /// A value longer than this is cut (at a character boundary): only a
    /// made-up label could be, a kernel one is a 15-byte name or an address.
    static let maxValueBytes = 4096

    /// The length in one byte below 255, else 255 and two bytes.
    static func appendValue<Bytes: Collection<UInt8>>(_ value: Bytes, to text: inout [UInt8]) {
        guard value.count > maxValueBytes else {
            appendLength(value.count, to: &text)
            text.append(contentsOf: value)
            return
        }
        let bytes = Array(value)
        var count = maxValueBytes
        while count > 0 && bytes[count] & 0xC0 == 0x80 { count -= 1 }  // not inside a UTF-8 sequence
        var backslashes = 0
        while backslashes < count && bytes[count - 1 - backslashes] == UInt8(ascii: "\\") { backslashes += 1 }
        if backslashes % 2 == 1 { count -= 1 }  // not inside an escape
        appendLength(count, to: &text)
        text.append(contentsOf: bytes[..<count])
    }

    private static func appendLength(_ count: Int, to text: inout [UInt8]) {
        if count < 255 {
            text.append(UInt8(count))
        } else {
            text.append(255)
            text.append(UInt8(count >> 8))
            text.append(UInt8(count & 0xFF))
        }
    }

    /// Reads the length at `position` and moves past it.
    @inline(__always)
    static func readLength(_ text: UnsafeRawBufferPointer, at position: inout Int) -> Int {
        let first = Int(text[position])
        guard first == 255 else {
            position += 1
            return first
        }
        position += 3
        return Int(text[position - 2]) << 8 | Int(text[position - 1])
    }

    static func appendDecimal(_ value: UInt64, to text: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { digits in
            var start = 21
            var rest = value
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                rest /= 10
            } while rest > 0
            start -= 1
            digits[start] = UInt8(21 - start - 1)  // the length byte
            text.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start..<21]))
        }
    }

    /// A value that needs no escaping (an address) is appended as it is.
    static func appendText(_ value: String, to text: inout [UInt8]) {
        var value = value
        let plain = value.withUTF8 { bytes -> Bool in
            let clean = bytes.count <= maxValueBytes
                && bytes.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "\\") && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\n") }
            if clean {
                appendLength(bytes.count, to: &text)
                text.append(contentsOf: bytes)
            }
            return clean
        }
        if !plain { appendValue(escapedLabelValue(value), to: &text) }
    }
}

private let ipv4Name = Array(AddressFamily.ipv4.rawValue.utf8)
private let ephemeralName = Array("ephemeral".utf8)
/// By `ConnectionLifecycle.Role` raw value.
private let roleNames = [Array("unknown".utf8), Array("client".utf8), Array("server".utf8)]
private let ipv6Name = Array(AddressFamily.ipv6.rawValue.utf8)

/// A family's name and its `# HELP` and `# TYPE` lines, as bytes.
struct FamilyText: Sendable {
    let name: [UInt8]
    let header: [UInt8]

    init(name: String, help: String, type: MetricType) {
        self.name = Array(name.utf8)
        var writer = ExpositionWriter()
        writer.family(name: name, help: help, type: type)
        header = writer.bytes
    }
}
