/// One view's connection outcomes and histograms at a snapshot. Only the
/// families with a sample are rendered, and only a series' samples that
/// happened (a role, reason or direction no end had has no sample).
struct OutcomesSnapshot: Sendable {
    enum RenderedFamily: Sendable {
        /// Samples of the series: each the sum of cells of its outcome record,
        /// with its extra label (`role="client"`) or none.
        case counts(FamilyText, [(cells: [Int], extra: [UInt8]?)])
        case failures(FamilyText)
        case histogram(SlotHistogram, overflow: [UInt64]?)
    }

    let families: [RenderedFamily]
    let counts: SlotRecords
    /// Open ends' roles and establishment by slot (`ViewOutcomes.liveCells` each); empty: none.
    let live: [UInt32]
    /// The overflow series' record summed with its overflowed label sets' (open ends included).
    let overflowCounts: [UInt64]?
    /// Failed connects in render order: own series by slot, the overflow series' last (`slot` is its slot).
    let failures: [(slot: Int, reason: Int, count: UInt64)]
    let reasonTexts: [[UInt8]]

    /// An own series' sum of `cells`, or the overflow series' (from its summed `record`).
    func value(slot: Int, cells: [Int], record: [UInt64]?) -> UInt64 {
        var sum: UInt64 = 0
        for cell in cells { sum &+= record?[cell] ?? value(slot: slot, cell: cell) }
        return sum
    }

    /// An own series' count: its record's, plus its open ends' for the live cells.
    func value(slot: Int, cell: Int) -> UInt64 {
        var value: UInt64 = 0
        if let record = counts.record(of: slot) { value = counts.cells[record * counts.stride + cell] }
        if cell < ViewOutcomes.liveCells && !live.isEmpty { value &+= UInt64(live[slot * ViewOutcomes.liveCells + cell]) }
        return value
    }

    /// Lines one series can write in one family at most, for a piece's room.
    var linesPerSeries: Int {
        families.map { family -> Int in
            if case .histogram(let histogram, _) = family { return histogram.leTexts.count + 2 }
            return 2
        }.max() ?? 0
    }

    var longestName: Int {
        families.map { family -> Int in
            switch family {
            case .counts(let text, _), .failures(let text): text.name.count
            case .histogram(let histogram, _): histogram.text.name.count + "_bucket".count
            }
        }.max() ?? 0
    }

    var longestHeader: Int {
        families.map { family -> Int in
            switch family {
            case .counts(let text, _), .failures(let text): text.header.count
            case .histogram(let histogram, _): histogram.text.header.count
            }
        }.max() ?? 0
    }

    /// The longest extra label (`reason="..."`, `le="..."`, `direction="received"`) and its separator.
    var longestExtra: Int {
        let le = families.flatMap { family -> [Int] in
            if case .histogram(let histogram, _) = family { return histogram.leTexts.map(\.count) }
            return []
        }
        return (reasonTexts.map(\.count) + le + [directionReceived.count]).max()! + 2
    }
}

private let roleClient = Array(#"role="client""#.utf8)
private let roleServer = Array(#"role="server""#.utf8)
private let directionSent = Array(#"direction="sent""#.utf8)
private let directionReceived = Array(#"direction="received""#.utf8)
private let bucketSuffix = Array("_bucket".utf8)
private let sumSuffix = Array("_sum".utf8)
private let countSuffix = Array("_count".utf8)

extension SeriesView {
    func outcomesSnapshot(reasons: FailureReasons, live: [UInt32]) -> OutcomesSnapshot? {
        let counts = outcomes.counts
        let overflow = overflowSlot.map(Int.init)
        func isOwn(_ slot: Int) -> Bool { slot < state.count && state[slot] == .own }
        /// The overflow series' slots: its own and its overflowed label sets'.
        var overflowSlots: [Int] {
            guard let overflow else { return [] }
            return [overflow] + state.indices.filter { state[$0] == .overflowed }
        }
        var overflowCounts = overflow == nil || counts.recordCount == 0 ? nil : counts.sum(of: overflowSlots)
        if overflow != nil && !live.isEmpty {
            for slot in state.indices where state[slot] == .overflowed {
                for cell in 0..<ViewOutcomes.liveCells where live[slot * ViewOutcomes.liveCells + cell] != 0 {
                    if overflowCounts == nil { overflowCounts = [UInt64](repeating: 0, count: counts.stride) }
                    overflowCounts![cell] &+= UInt64(live[slot * ViewOutcomes.liveCells + cell])
                }
            }
        }
        // Not rendered: what `value` needs of it.
        let values = OutcomesSnapshot(families: [], counts: counts, live: live, overflowCounts: nil, failures: [], reasonTexts: [])
        var families: [OutcomesSnapshot.RenderedFamily] = []
        func addCounts(_ text: FamilyText, _ samples: [(cells: [ViewOutcomes.Cell], extra: [UInt8]?)]) {
            // Slots with a record, or every slot where open ends may have bits.
            let candidates = live.isEmpty ? counts.recordOf.indices : state.indices
            let any = samples.flatMap(\.cells).contains { cell in
                overflowCounts.map { $0[cell.rawValue] != 0 } == true
                    || candidates.contains { isOwn($0) && values.value(slot: $0, cell: cell.rawValue) != 0 }
            }
            if any { families.append(.counts(text, samples.map { ($0.cells.map(\.rawValue), $0.extra) })) }
        }
        var failures: [(slot: Int, reason: Int, count: UInt64)] = []
        if counts.recordCount > 0 || !outcomes.failureCounts.isEmpty || !live.isEmpty {
            // A view that keeps the role label has it already: one sample, both roles' sum
            // (an own series has one role; the overflow series may have both).
            if config.labels.contains(.role) {
                addCounts(outcomes.opened, [([.openedClient, .openedServer], nil)])
            } else {
                addCounts(outcomes.opened, [([.openedClient], roleClient), ([.openedServer], roleServer)])
            }
            addCounts(outcomes.established, [([.established], nil)])
            var overflowFailures: [Int: UInt64] = [:]
            for (key, value) in outcomes.failureCounts where value != 0 {
                let slot = Int(key.slot)
                if isOwn(slot) {
                    failures.append((slot, Int(key.reason), value))
                } else if overflow != nil {
                    overflowFailures[Int(key.reason), default: 0] &+= value
                }
            }
            let texts = reasons.labelTexts
            failures.sort { $0.slot != $1.slot ? $0.slot < $1.slot : texts[$0.reason].lexicographicallyPrecedes(texts[$1.reason]) }
            if let overflow {
                failures += overflowFailures.sorted { texts[$0.key].lexicographicallyPrecedes(texts[$1.key]) }
                    .map { (overflow, $0.key, $0.value) }
            }
            if !failures.isEmpty { families.append(.failures(outcomes.failures)) }
            addCounts(outcomes.closed, [([.closed], nil)])
            addCounts(outcomes.resets, [([.resetsSent], directionSent), ([.resetsReceived], directionReceived)])
        }
        for histogram in [outcomes.connect, outcomes.lifetime, outcomes.rtt].compactMap({ $0 })
        where histogram.records.recordCount > 0 {
            let records = histogram.records
            let anyOwn = records.recordOf.indices.contains { isOwn($0) && records.record(of: $0) != nil }
            let overflowCells = overflow == nil ? nil : records.sum(of: overflowSlots)
            if anyOwn || overflowCells != nil { families.append(.histogram(histogram, overflow: overflowCells)) }
        }
        guard !families.isEmpty else { return nil }
        return OutcomesSnapshot(families: families, counts: counts, live: live, overflowCounts: overflowCounts,
                                failures: failures, reasonTexts: reasons.labelTexts)
    }
}

extension ViewSnapshot {
    /// The outcome family `index` from `cursor.slot` (slots, then the
    /// overflow series; for failures, positions in their list).
    func fillOutcome(_ index: Int, _ outcomes: OutcomesSnapshot, _ out: inout OutputBuffer, until limit: Int,
                     cursor: inout RenderCursor) -> Bool {
        let family = outcomes.families[index]
        if cursor.slot < 0 {
            guard out.count < limit else { return false }
            switch family {
            case .counts(let text, _), .failures(let text): out.append(text.header)
            case .histogram(let histogram, _): out.append(histogram.text.header)
            }
            cursor.slot = 0
        }
        return layout.withPieces { pieces in
            switch family {
            case .counts(let text, let cells):
                return fillSeries(&out, until: limit, cursor: &cursor,
                                  has: { slot in cells.contains { outcomes.value(slot: slot, cells: $0.cells, record: nil) != 0 } },
                                  overflow: outcomes.overflowCounts) { slot, overflowRecord, out in
                    for (sampleCells, extra) in cells {
                        let value = outcomes.value(slot: slot, cells: sampleCells, record: overflowRecord)
                        if value != 0 { writeLine(text.name, nil, pieces: pieces, slot: slot, extra: extra, value: value, into: &out) }
                    }
                }
            case .failures(let text):
                while cursor.slot < outcomes.failures.count {
                    guard out.count < limit else { return false }
                    let failure = outcomes.failures[cursor.slot]
                    writeLine(text.name, nil, pieces: pieces, slot: failure.slot, extra: outcomes.reasonTexts[failure.reason],
                              value: failure.count, into: &out)
                    cursor.slot += 1
                }
                return true
            case .histogram(let histogram, let overflowCells):
                let records = histogram.records
                return fillSeries(&out, until: limit, cursor: &cursor, has: { records.record(of: $0) != nil },
                                  overflow: overflowCells) { slot, record, out in
                    let values = record ?? records.cells
                    let base = record == nil ? records.record(of: slot)! * records.stride : 0
                    var cumulative: UInt64 = 0
                    for bucket in histogram.leTexts.indices {
                        cumulative &+= values[base + bucket]
                        writeLine(histogram.text.name, bucketSuffix, pieces: pieces, slot: slot, extra: histogram.leTexts[bucket],
                                  value: cumulative, into: &out)
                    }
                    writeLine(histogram.text.name, sumSuffix, pieces: pieces, slot: slot, extra: nil,
                              value: values[base + histogram.sumCell], seconds: true, into: &out)
                    writeLine(histogram.text.name, countSuffix, pieces: pieces, slot: slot, extra: nil, value: cumulative, into: &out)
                }
            }
        }
    }

    /// Own series with a record in slot order, then the overflow series with its summed record.
    private func fillSeries(_ out: inout OutputBuffer, until limit: Int, cursor: inout RenderCursor, has: (Int) -> Bool,
                            overflow: [UInt64]?, write: (Int, [UInt64]?, inout OutputBuffer) -> Void) -> Bool {
        while cursor.slot < state.count {
            if state[cursor.slot] == .own && has(cursor.slot) {
                guard out.count < limit else { return false }
                write(cursor.slot, nil, &out)
            }
            cursor.slot += 1
        }
        if let overflowSlot, let overflow {
            guard out.count < limit else { return false }
            write(overflowSlot, overflow, &out)
        }
        return true
    }

    /// `name[suffix]{labels[,extra]} value`.
    private func writeLine(_ name: [UInt8], _ suffix: [UInt8]?, pieces: LabelLayout.Pieces, slot: Int, extra: [UInt8]?,
                           value: UInt64, seconds: Bool = false, into out: inout OutputBuffer) {
        out.append(name)
        if let suffix { out.append(suffix) }
        writeLabelValues(pieces: pieces, slot: slot, into: &out)
        if let extra {
            if pieces.labelCount == 0 {
                out.append(byte: UInt8(ascii: "{"))
            } else {
                out.append(byte: UInt8(ascii: "\""))
                out.append(byte: UInt8(ascii: ","))
            }
            out.append(extra)
            out.append(byte: UInt8(ascii: "}"))
        } else {
            out.append(pieces.piece(pieces.labelCount))
        }
        out.append(byte: UInt8(ascii: " "))
        if seconds { out.appendMicroseconds(value) } else { out.appendDecimal(value) }
        out.append(byte: UInt8(ascii: "\n"))
    }
}
