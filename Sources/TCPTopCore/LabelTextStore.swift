#if canImport(Glibc)
import Glibc
#endif

/// The label text of every series slot of a view, in one byte arena, with
/// an open-addressing index from text to slot. A text per slot as its own
/// array cost ~210 bytes for ~115 bytes of text at 100k series; here it is
/// the text plus 9 bytes, and the index 8 bytes per series.
struct LabelTextStore {
    private(set) var arena: [UInt8] = []
    private var start: [Int32] = []
    /// -1: the slot holds no text.
    private var length: [Int32] = []
    /// Whether the slot's text is in the index (the overflow series' is not).
    private var indexed: [Bool] = []
    /// A slot, or `empty` / `deleted`; its size is a power of two.
    private var table: [Int32] = []
    private var tableUsed = 0  // slots and tombstones
    private var indexedCount = 0
    private(set) var liveBytes = 0
    private var deadBytes = 0

    private static let empty: Int32 = -1
    private static let deleted: Int32 = -2

    func text(of slot: Int) -> ArraySlice<UInt8> {
        let begin = Int(start[slot])
        return arena[begin..<begin + Int(length[slot])]
    }

    /// The indexed slot whose text is `text`, if any.
    func slot(for text: [UInt8]) -> Int32? {
        guard !table.isEmpty else { return nil }
        let mask = table.count - 1
        var position = Self.hash(text) & mask
        while table[position] != Self.empty {
            let candidate = table[position]
            if candidate >= 0 && equals(Int(candidate), text) { return candidate }
            position = (position + 1) & mask
        }
        return nil
    }

    /// Gives `slot` (an existing one, or the next new one) the text `text`.
    mutating func set(slot: Int, text: [UInt8], indexed isIndexed: Bool) {
        if slot == start.count {
            start.append(0)
            length.append(-1)
            indexed.append(false)
        }
        precondition(length[slot] < 0, "a slot's text is set once until cleared")
        start[slot] = Int32(arena.count)
        length[slot] = Int32(text.count)
        arena.append(contentsOf: text)
        liveBytes += text.count
        // Indexed after the insert: a rebuild on the way must not see it twice.
        if isIndexed { addToIndex(Int32(slot), text: text) }
        indexed[slot] = isIndexed
    }

    mutating func clear(slot: Int) {
        guard length[slot] >= 0 else { return }
        if indexed[slot] { removeFromIndex(Int32(slot)) }
        liveBytes -= Int(length[slot])
        deadBytes += Int(length[slot])
        length[slot] = -1
        indexed[slot] = false
        if deadBytes > max(liveBytes, 1 << 16) { compact() }
    }

    // MARK: Index

    private mutating func addToIndex(_ slot: Int32, text: [UInt8]) {
        if (tableUsed + 1) * 2 > table.count { rebuildIndex(capacityFor: indexedCount + 1) }
        let mask = table.count - 1
        var position = Self.hash(text) & mask
        while table[position] >= 0 { position = (position + 1) & mask }
        if table[position] == Self.empty { tableUsed += 1 }
        table[position] = slot
        indexedCount += 1
    }

    private mutating func removeFromIndex(_ slot: Int32) {
        let mask = table.count - 1
        var position = Self.hash(Array(text(of: Int(slot)))) & mask
        while table[position] != slot { position = (position + 1) & mask }
        table[position] = Self.deleted
        indexedCount -= 1
    }

    /// A new table without tombstones, at most a quarter full.
    private mutating func rebuildIndex(capacityFor count: Int) {
        var size = 16
        while size < count * 4 { size *= 2 }
        table = [Int32](repeating: Self.empty, count: size)
        tableUsed = 0
        let mask = size - 1
        for slot in indexed.indices where indexed[slot] {
            var position = Self.hash(Array(text(of: slot))) & mask
            while table[position] != Self.empty { position = (position + 1) & mask }
            table[position] = Int32(slot)
            tableUsed += 1
        }
    }

    /// Drops the texts of cleared slots from the arena.
    private mutating func compact() {
        var packed: [UInt8] = []
        packed.reserveCapacity(liveBytes)
        for slot in start.indices where length[slot] >= 0 {
            let text = self.text(of: slot)
            start[slot] = Int32(packed.count)
            packed.append(contentsOf: text)
        }
        arena = packed
        deadBytes = 0
    }

    private func equals(_ slot: Int, _ text: [UInt8]) -> Bool {
        guard Int(length[slot]) == text.count else { return false }
        let begin = Int(start[slot])
        return arena.withUnsafeBytes { stored in
            text.withUnsafeBytes { memcmp(stored.baseAddress! + begin, $0.baseAddress!, text.count) == 0 }
        }
    }

    private static func hash(_ text: [UInt8]) -> Int {
        var hasher = Hasher()
        text.withUnsafeBytes { hasher.combine(bytes: $0) }
        return hasher.finalize()
    }
}
