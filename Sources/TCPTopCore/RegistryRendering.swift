extension ConnectionRegistry {
    public static let sentHelp =
        "Bytes sent over TCP, summed over the connection ends that share these labels."
    public static let receivedHelp =
        "Bytes received over TCP, summed over the connection ends that share these labels."

    /// What a render needs, as of now: every series' sums, and the label
    /// texts by reference. Taken under the caller's lock; rendered after it
    /// is released. Later updates do not change it: the arrays it shares are
    /// copied by the registry on its next write to them (once per snapshot:
    /// at most the per-slot state and text positions and one 64 KiB chunk of
    /// label text per view; a text compaction copies the live texts).
    public func snapshot() -> RegistrySnapshot {
        RegistrySnapshot(views: views.map { $0.snapshot(entries: entries) })
    }

    /// Writes both families of every view (the whole text in one buffer;
    /// the daemon streams a snapshot instead).
    public func render(into writer: inout ExpositionWriter) {
        snapshot().write { writer.bytes.append(contentsOf: $0) }
    }
}

/// The series of every view at one moment, rendered piece by piece.
public struct RegistrySnapshot: Sendable {
    let views: [ViewSnapshot]

    /// Writes both families of every view, then `trailer`, to `sink` in
    /// pieces of about `pieceSize` bytes (a piece ends after a whole line).
    public func write(pieceSize: Int = 1 << 16, trailer: [UInt8] = [],
                      to sink: (ArraySlice<UInt8>) throws -> Void) rethrows {
        let longestLine = views.map(\.longestLine).max() ?? 0
        let capacity = max(pieceSize, 1) + max(longestLine, trailer.count)
        var cursor = RenderCursor()
        var trailerWritten = false
        while !trailerWritten {
            let piece = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
                var out = OutputBuffer(base: buffer.baseAddress!, capacity: capacity)
                while cursor.view < views.count && out.count < pieceSize {
                    if views[cursor.view].fill(&out, until: pieceSize, cursor: &cursor) { cursor.nextView() }
                }
                if cursor.view == views.count && out.count + trailer.count <= capacity {
                    out.append(trailer)
                    trailerWritten = true
                }
                count = out.count
            }
            if !piece.isEmpty { try sink(piece[...]) }
        }
    }
}

/// Where a render is: view, family (sent, received) and slot.
struct RenderCursor {
    var view = 0
    var family = 0
    /// -1: the family's header is next; `state.count`: the overflow series is next.
    var slot = -1

    mutating func nextView() {
        view += 1
        family = 0
        slot = -1
    }
}

/// Raw bytes into a piece being built; the caller checks the room.
struct OutputBuffer {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    var count = 0

    /// Most of what a sample is made of is 1 to 32 bytes: copied with two
    /// overlapping loads and stores instead of a call to memcpy (16 per sample).
    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress else { return }
        let length = bytes.count
        let target = UnsafeMutableRawPointer(base + count)
        if length >= 16 {
            if length <= 32 {
                let head = source.loadUnaligned(as: SIMD16<UInt8>.self)
                let tail = source.loadUnaligned(fromByteOffset: length - 16, as: SIMD16<UInt8>.self)
                target.storeBytes(of: head, as: SIMD16<UInt8>.self)
                target.storeBytes(of: tail, toByteOffset: length - 16, as: SIMD16<UInt8>.self)
            } else {
                target.copyMemory(from: source, byteCount: length)
            }
        } else if length >= 8 {
            let head = source.loadUnaligned(as: UInt64.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 8, as: UInt64.self)
            target.storeBytes(of: head, as: UInt64.self)
            target.storeBytes(of: tail, toByteOffset: length - 8, as: UInt64.self)
        } else if length >= 4 {
            let head = source.loadUnaligned(as: UInt32.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self)
            target.storeBytes(of: head, as: UInt32.self)
            target.storeBytes(of: tail, toByteOffset: length - 4, as: UInt32.self)
        } else {
            for offset in 0..<length { target.storeBytes(of: source.load(fromByteOffset: offset, as: UInt8.self), toByteOffset: offset, as: UInt8.self) }
        }
        count += length
    }

    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    @inline(__always)
    mutating func append(byte: UInt8) {
        base[count] = byte
        count += 1
    }

    /// Digits written in place, backwards from their end.
    @inline(__always)
    mutating func appendDecimal(_ value: UInt64) {
        var digits = 1
        var scale: UInt64 = 10
        while digits < 20 && value >= scale {
            digits += 1
            scale = scale &* 10
        }
        var rest = value
        var position = count + digits
        while position > count {
            position -= 1
            let (quotient, remainder) = rest.quotientAndRemainder(dividingBy: 10)
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remainder)
            rest = quotient
        }
        count += digits
    }
}

/// One view's series at a snapshot: sums by slot, label texts by reference.
struct ViewSnapshot: Sendable {
    let names: [[UInt8]]    // sent, received
    let headers: [[UInt8]]  // sent, received
    let layout: LabelLayout
    let texts: LabelTexts
    let state: [SeriesView.SlotState]
    let sums: [[UInt64]]    // sent, received
    let overflowSlot: Int?
    let seriesCount: Int

    /// An upper bound of one header or sample line.
    var longestLine: Int {
        max(headers.map(\.count).max() ?? 0,
            (names.map(\.count).max() ?? 0) + layout.piecesBytes + texts.longestText + 22)
    }

    /// Writes lines from `cursor` until the piece holds `limit` bytes
    /// (false) or the view is done (true). The piece's capacity leaves room
    /// for a `longestLine` past the limit.
    func fill(_ out: inout OutputBuffer, until limit: Int, cursor: inout RenderCursor) -> Bool {
        while cursor.family < 2 {
            guard seriesCount > 0 else { return true }
            let name = names[cursor.family]
            let sums = self.sums[cursor.family]
            if cursor.slot < 0 {
                guard out.count < limit else { return false }
                out.append(headers[cursor.family])
                cursor.slot = 0
            }
            let done = name.withUnsafeBytes { name in
                layout.withPieces { pieces in
                    state.withUnsafeBufferPointer { state in
                        while cursor.slot < state.count {
                            if state[cursor.slot] == .own {
                                guard out.count < limit else { return false }
                                writeSample(name: name, pieces: pieces, slot: cursor.slot, value: sums[cursor.slot], into: &out)
                            }
                            cursor.slot += 1
                        }
                        return true
                    }
                }
            }
            guard done else { return false }
            if cursor.slot == state.count, let overflowSlot {
                guard out.count < limit else { return false }
                name.withUnsafeBytes { name in
                    layout.withPieces { writeSample(name: name, pieces: $0, slot: overflowSlot, value: sums[overflowSlot], into: &out) }
                }
            }
            cursor.family += 1
            cursor.slot = -1
        }
        return true
    }

    @inline(__always)
    private func writeSample(name: UnsafeRawBufferPointer, pieces: LabelLayout.Pieces, slot: Int, value: UInt64,
                             into out: inout OutputBuffer) {
        out.append(name)
        texts.withText(of: slot) { text in
            var position = 0
            for label in 0..<pieces.labelCount {
                out.append(pieces.piece(label))
                let length = LabelLayout.readLength(text, at: &position)
                out.append(UnsafeRawBufferPointer(rebasing: text[position..<position + length]))
                position += length
            }
        }
        out.append(pieces.piece(pieces.labelCount))
        out.append(byte: UInt8(ascii: " "))
        out.appendDecimal(value)
        out.append(byte: UInt8(ascii: "\n"))
    }
}

extension SeriesView {
    /// Sums each series as its base plus its members' counters (one pass over
    /// the entries, indexed by slot), the overflowed label sets into the overflow series.
    func snapshot(entries: [RegistryEntry]) -> ViewSnapshot {
        var sent = baseSent
        var received = baseReceived
        slotOfEntry.withUnsafeBufferPointer { slots in
            entries.withUnsafeBufferPointer { entries in
                sent.withUnsafeMutableBufferPointer { sent in
                    received.withUnsafeMutableBufferPointer { received in
                        for index in entries.indices {
                            let slot = Int(slots[index])
                            sent[slot] &+= entries[index].sent
                            received[slot] &+= entries[index].received
                        }
                    }
                }
            }
        }
        if let overflow = overflowSlot.map(Int.init) {
            for slot in state.indices where state[slot] == .overflowed {
                sent[overflow] &+= sent[slot]
                received[overflow] &+= received[slot]
            }
        }
        return ViewSnapshot(
            names: [sentName, receivedName], headers: [sentHeader, receivedHeader], layout: layout,
            texts: labelTexts.texts, state: state, sums: [sent, received],
            overflowSlot: overflowSlot.map(Int.init), seriesCount: renderedSeriesCount)
    }
}
