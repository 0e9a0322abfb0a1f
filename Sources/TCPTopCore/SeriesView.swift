/// The series of one view. Each connection end is given its series slot
/// when it is inserted, so a scrape sums with array indexes and never
/// hashes label sets. Slots are reused through a free list.
///
/// A series is kept while it has members (connection ends) or was active
/// within the retention; the final counts of members that expire are folded
/// into the series' base so its value never goes backwards.
final class SeriesView {
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
    let sentName: [UInt8]
    let receivedName: [UInt8]
    let overflowLabelText: [UInt8]

    /// The slot of each registry entry, parallel to the registry's entry array.
    private(set) var slotOfEntry: [Int32] = []

    // Per slot.
    private(set) var state: [SlotState] = []
    private(set) var labelTexts = LabelTextStore()
    private(set) var baseSent: [UInt64] = []
    private(set) var baseReceived: [UInt64] = []
    private var memberCount: [Int] = []
    private var lastActivity: [Double] = []

    private var freeSlots: [Int32] = []
    private(set) var overflowSlot: Int32?
    private(set) var ownSeriesCount = 0
    private(set) var overflowedLabelSetCount = 0
    /// Bytes of label text over live series, to size the output buffer.
    var labelTextBytes: Int { labelTexts.liveBytes }

    init(config: ViewConfig) {
        self.config = config
        sentName = Array("\(config.prefix)_sent_bytes_total".utf8)
        receivedName = Array("\(config.prefix)_received_bytes_total".utf8)
        overflowLabelText = formattedLabels(config.labels.map { ($0.rawValue, Array("__overflow__".utf8)) })
    }

    var renderedSeriesCount: Int { ownSeriesCount + (overflowSlot == nil ? 0 : 1) }

    // MARK: Membership

    /// Adds a new connection end (appended to the registry's entries).
    func addMember(labels: ConnectionLabels, now: Double) {
        let text = labelText(for: labels)
        // Own and overflowed label sets are found by their escaped text (escaping is injective).
        let slot = labelTexts.slot(for: text) ?? newLabelSet(text)
        memberCount[Int(slot)] += 1
        slotOfEntry.append(slot)
        touch(slot: slot, now: now)
    }

    /// The member at `entryIndex` changed its counters.
    func touchMember(at entryIndex: Int, now: Double) {
        touch(slot: slotOfEntry[entryIndex], now: now)
    }

    /// The member at `entryIndex` expired: its final counts go into the base,
    /// then it is removed the way the registry removes it (last moves into its place).
    func removeMember(at entryIndex: Int, finalSent: UInt64, finalReceived: UInt64) {
        let slot = Int(slotOfEntry[entryIndex])
        baseSent[slot] &+= finalSent
        baseReceived[slot] &+= finalReceived
        memberCount[slot] -= 1
        slotOfEntry[entryIndex] = slotOfEntry[slotOfEntry.count - 1]
        slotOfEntry.removeLast()
    }

    private func touch(slot: Int32, now: Double) {
        lastActivity[Int(slot)] = now
        if state[Int(slot)] == .overflowed, let overflowSlot {
            lastActivity[Int(overflowSlot)] = now
        }
    }

    private func newLabelSet(_ text: [UInt8]) -> Int32 {
        let full = config.maxSeries > 0 && ownSeriesCount >= config.maxSeries
        // A real label set that reads like the overflow one joins it rather than duplicating it.
        let overflowed = full || text == overflowLabelText
        let slot = allocateSlot(text, state: overflowed ? .overflowed : .own)
        if overflowed {
            let overflow = overflowSlot ?? allocateSlot(overflowLabelText, state: .overflow)
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
    func expireSeries(now: Double, retention: Double) {
        for slot in state.indices where state[slot] == .own || state[slot] == .overflowed {
            guard memberCount[slot] == 0, now - lastActivity[slot] >= retention else { continue }
            if state[slot] == .overflowed, let overflow = overflowSlot.map(Int.init) {
                baseSent[overflow] &+= baseSent[slot]
                baseReceived[overflow] &+= baseReceived[slot]
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
        }
    }

    // MARK: Slots

    private func allocateSlot(_ text: [UInt8], state newState: SlotState) -> Int32 {
        // The overflow series is never looked up by its text.
        let indexed = newState != .overflow
        if let slot = freeSlots.popLast() {
            let index = Int(slot)
            state[index] = newState
            labelTexts.set(slot: index, text: text, indexed: indexed)
            return slot
        }
        labelTexts.set(slot: state.count, text: text, indexed: indexed)
        state.append(newState)
        baseSent.append(0)
        baseReceived.append(0)
        memberCount.append(0)
        lastActivity.append(0)
        return Int32(state.count - 1)
    }

    private func freeSlot(_ slot: Int) {
        labelTexts.clear(slot: slot)
        state[slot] = .free
        baseSent[slot] = 0
        baseReceived[slot] = 0
        memberCount[slot] = 0
        freeSlots.append(Int32(slot))
    }

    // MARK: Labels

    /// Built in one buffer, without a String per value: this runs for every
    /// new connection end in every view.
    private func labelText(for labels: ConnectionLabels) -> [UInt8] {
        guard !config.labels.isEmpty else { return [] }
        var text = ExpositionWriter(reservingCapacity: 160)
        for (position, label) in config.labels.enumerated() {
            text.bytes.append(position == 0 ? UInt8(ascii: "{") : UInt8(ascii: ","))
            text.bytes.append(contentsOf: label.rawValue.utf8)
            text.bytes.append(contentsOf: #"=""#.utf8)
            switch label {
            case .pid: text.appendDecimal(UInt64(labels.pid))
            case .comm: text.bytes.append(contentsOf: escapedLabelValue(labels.comm))
            case .family: text.bytes.append(contentsOf: labels.family.rawValue.utf8)
            case .laddr: text.bytes.append(contentsOf: escapedLabelValue(labels.localAddress))
            case .lport: text.appendDecimal(UInt64(labels.localPort))
            case .raddr: text.bytes.append(contentsOf: escapedLabelValue(labels.remoteAddress))
            case .rport: text.appendDecimal(UInt64(labels.remotePort))
            }
            text.bytes.append(UInt8(ascii: "\""))
        }
        text.bytes.append(UInt8(ascii: "}"))
        return text.bytes
    }
}
