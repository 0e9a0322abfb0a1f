/// One view's series at a snapshot: values by slot, label texts by reference.
struct ViewSnapshot: Sendable {
    /// Bytes sent, received, then retransmitted segments if rendered: sums by slot.
    let counters: [Family<UInt64>]
    /// The highest smoothed RTT of each slot's open members, in microseconds
    /// (0: none known, no sample); nil when not rendered or no series has one.
    let rtt: Family<UInt32>?
    /// Connection outcomes and histograms; nil when none has a sample.
    let outcomes: OutcomesSnapshot?
    let layout: LabelLayout
    let texts: LabelTexts
    let state: [SeriesView.SlotState]
    let overflowSlot: Int?
    let seriesCount: Int

    struct Family<Value: FixedWidthInteger & UnsignedInteger & Sendable>: Sendable {
        let text: FamilyText
        let values: [Value]
    }

    private var healthFamilyCount: Int { counters.count + (rtt == nil ? 0 : 1) }
    private var familyCount: Int { healthFamilyCount + (outcomes?.families.count ?? 0) }

    /// An upper bound of one header or of what one series writes in one
    /// family (a value takes at most 20 digits; a histogram writes a line per bucket).
    var longestLine: Int {
        let texts = counters.map(\.text) + (rtt.map { [$0.text] } ?? [])
        let line = max(texts.map(\.header.count).max() ?? 0,
                       (texts.map(\.name.count).max() ?? 0) + layout.piecesBytes + self.texts.longestText + 22)
        guard let outcomes else { return line }
        let outcomeLine = outcomes.longestName + layout.piecesBytes + self.texts.longestText + outcomes.longestExtra + 24
        return max(line, outcomes.longestHeader, outcomeLine * outcomes.linesPerSeries)
    }

    /// Writes lines from `cursor` until the piece holds `limit` bytes
    /// (false) or the view is done (true). The piece's capacity leaves room
    /// for a `longestLine` past the limit.
    func fill(_ out: inout OutputBuffer, until limit: Int, cursor: inout RenderCursor) -> Bool {
        guard seriesCount > 0 else { return true }
        while cursor.family < familyCount {
            let done = if cursor.family < counters.count {
                fill(counters[cursor.family], seconds: false, &out, until: limit, cursor: &cursor)
            } else if cursor.family < healthFamilyCount {
                fill(rtt!, seconds: true, &out, until: limit, cursor: &cursor)
            } else {
                fillOutcome(cursor.family - healthFamilyCount, outcomes!, &out, until: limit, cursor: &cursor)
            }
            guard done else { return false }
            cursor.family += 1
            cursor.slot = -1
        }
        return true
    }

    /// One family from `cursor.slot`. A gauge (`seconds`, microseconds
    /// written as seconds) has no sample where its value is 0 (unknown).
    private func fill<Value>(_ family: Family<Value>, seconds: Bool, _ out: inout OutputBuffer, until limit: Int,
                             cursor: inout RenderCursor) -> Bool {
        if cursor.slot < 0 {
            guard out.count < limit else { return false }
            out.append(family.text.header)
            cursor.slot = 0
        }
        let done = family.text.name.withUnsafeBytes { name in
            layout.withPieces { pieces in
                state.withUnsafeBufferPointer { state in
                    family.values.withUnsafeBufferPointer { values in
                        while cursor.slot < state.count {
                            if state[cursor.slot] == .own && (!seconds || values[cursor.slot] != 0) {
                                guard out.count < limit else { return false }
                                writeSample(name: name, pieces: pieces, slot: cursor.slot, value: UInt64(values[cursor.slot]),
                                            seconds: seconds, into: &out)
                            }
                            cursor.slot += 1
                        }
                        return true
                    }
                }
            }
        }
        guard done else { return false }
        if cursor.slot == state.count, let overflowSlot, !seconds || family.values[overflowSlot] != 0 {
            guard out.count < limit else { return false }
            family.text.name.withUnsafeBytes { name in
                layout.withPieces {
                    writeSample(name: name, pieces: $0, slot: overflowSlot, value: UInt64(family.values[overflowSlot]),
                                seconds: seconds, into: &out)
                }
            }
        }
        return true
    }

    /// The slot's label values, each after its piece (`{pid="`, `",comm="`,
    /// ...); the closing piece is the caller's (an extra label may come first).
    @inline(__always)
    func writeLabelValues(pieces: LabelLayout.Pieces, slot: Int, into out: inout OutputBuffer) {
        texts.withText(of: slot) { text in
            var position = 0
            for label in 0..<pieces.labelCount {
                out.append(pieces.piece(label))
                let length = LabelLayout.readLength(text, at: &position)
                out.append(UnsafeRawBufferPointer(rebasing: text[position..<position + length]))
                position += length
            }
        }
    }

    @inline(__always)
    private func writeSample(name: UnsafeRawBufferPointer, pieces: LabelLayout.Pieces, slot: Int, value: UInt64,
                             seconds: Bool, into out: inout OutputBuffer) {
        out.append(name)
        writeLabelValues(pieces: pieces, slot: slot, into: &out)
        out.append(pieces.piece(pieces.labelCount))
        out.append(byte: UInt8(ascii: " "))
        if seconds { out.appendMicroseconds(value) } else { out.appendDecimal(value) }
        out.append(byte: UInt8(ascii: "\n"))
    }
}

extension SeriesView {
    /// Sums each series as its base plus its members' counters, and takes
    /// the highest RTT of its members (one pass over the entries, indexed by
    /// slot); the overflowed label sets go into the overflow series.
    /// `liveFacts`: some entry's role or establishment is in its bits, to be summed too.
    func snapshot(entries: [RegistryEntry], reasons: FailureReasons, liveFacts: Bool) -> ViewSnapshot {
        let withRetransmits = health.contains(.retransmits)
        let withRTT = health.contains(.rtt)
        var sent = baseSent
        var received = baseReceived
        var retransmitted = withRetransmits ? baseRetransmits : []
        var rtt = withRTT ? [UInt32](repeating: 0, count: state.count) : []
        // Open ends by slot: client, server, established (ViewOutcomes.Cell's first three).
        var live = liveFacts ? [UInt32](repeating: 0, count: state.count * ViewOutcomes.liveCells) : []
        slotOfEntry.withUnsafeBufferPointer { slots in
            entries.withUnsafeBufferPointer { entries in
                sent.withUnsafeMutableBufferPointer { sent in
                    received.withUnsafeMutableBufferPointer { received in
                        retransmitted.withUnsafeMutableBufferPointer { retransmitted in
                            rtt.withUnsafeMutableBufferPointer { rtt in
                                live.withUnsafeMutableBufferPointer { live in
                                    for index in entries.indices {
                                        let slot = Int(slots[index])
                                        sent[slot] &+= entries[index].sent
                                        received[slot] &+= entries[index].received
                                        if withRetransmits { retransmitted[slot] &+= entries[index].retransmits }
                                        if withRTT { rtt[slot] = max(rtt[slot], entries[index].rtt) }
                                        if liveFacts { addLive(entries[index].facts, slot: slot, to: live) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if let overflow = overflowSlot.map(Int.init) {
            for slot in state.indices where state[slot] == .overflowed {
                sent[overflow] &+= sent[slot]
                received[overflow] &+= received[slot]
                if withRetransmits { retransmitted[overflow] &+= retransmitted[slot] }
                if withRTT { rtt[overflow] = max(rtt[overflow], rtt[slot]) }
            }
        }
        // The family is left out when it would have no sample at all.
        let anyRTT = withRTT && state.indices.contains { rtt[$0] != 0 && (state[$0] == .own || state[$0] == .overflow) }
        var counters = [ViewSnapshot.Family(text: self.sent, values: sent),
                        ViewSnapshot.Family(text: self.received, values: received)]
        if withRetransmits { counters.append(ViewSnapshot.Family(text: retransmits, values: retransmitted)) }
        return ViewSnapshot(
            counters: counters, rtt: anyRTT ? ViewSnapshot.Family(text: self.rtt, values: rtt) : nil,
            outcomes: outcomesSnapshot(reasons: reasons, live: live), layout: layout,
            texts: labelTexts.texts, state: state, overflowSlot: overflowSlot.map(Int.init),
            seriesCount: renderedSeriesCount)
    }
}

@inline(__always)
private func addLive(_ facts: EntryFacts, slot: Int, to live: UnsafeMutableBufferPointer<UInt32>) {
    let base = slot * ViewOutcomes.liveCells
    if facts.contains(.roleCounted) {
        live[base + (facts.contains(.server) ? ViewOutcomes.Cell.openedServer : .openedClient).rawValue] &+= 1
    }
    if facts.contains(.established) { live[base + ViewOutcomes.Cell.established.rawValue] &+= 1 }
}
