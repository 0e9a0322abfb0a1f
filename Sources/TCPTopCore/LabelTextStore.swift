#if canImport(Glibc)
import Glibc
#endif

/// The label text of every series slot of a view, in an arena of 64 KiB
/// chunks, with an open-addressing index from text to slot. A text per
/// slot as its own array cost ~210 bytes for ~115 bytes of text at 100k
/// series; here it is the text plus 11 bytes, and the index 4 to 8 bytes
/// per series.
///
/// A value type that a scrape's snapshot copies: a later change copies at
/// most the chunk it writes to and the per-slot arrays it changes, never the
/// whole arena (a compaction excepted), and no text moves under a snapshot.
struct LabelTextStore {
    /// What a snapshot takes (not the index, which rendering does not need).
    private(set) var texts = LabelTexts()
    /// Whether the slot's text is in the index (the overflow series' is not).
    private var indexed: [Bool] = []
    /// Each slot's text hash (its low 32 bits): a rebuild or a removal does
    /// not read and hash the text again (a fifth of a big first read), and
    /// most wrong candidates are told apart without comparing texts.
    private var hashes: [UInt32] = []
    /// A slot, or `empty` / `deleted`; its size is a power of two.
    private var table: [Int32] = []
    private var tableUsed = 0  // slots and tombstones
    private var indexedCount = 0
    private(set) var liveBytes = 0
    private var deadBytes = 0

    private static let empty: Int32 = -1
    private static let deleted: Int32 = -2

    /// Bytes the arena holds, dead texts and chunk ends included.
    var arenaBytes: Int { texts.chunks.reduce(0) { $0 + $1.count } }

    func text(of slot: Int) -> ArraySlice<UInt8> { texts.text(of: slot) }

    private func withText<R>(of slot: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        texts.withText(of: slot, body)
    }

    /// Loads the index entry where `hash` starts, so that the look-up that
    /// follows finds it in cache (a batch of new label sets touches theirs
    /// first: their cache misses overlap). Returns it, to be kept alive.
    @inline(__always)
    func touch(hash: Int) -> Int32 {
        table.isEmpty ? 0 : table[Int(UInt32(truncatingIfNeeded: hash)) & (table.count - 1)]
    }

    /// The indexed slot whose text is `text`, if any.
    func slot(for text: [UInt8]) -> Int32? { slot(for: text[...], hash: Self.hash(text[...])) }

    /// The same, with the text's `hash(_:)` already known (a new label set
    /// is looked up, then stored: hashed once).
    func slot(for text: ArraySlice<UInt8>, hash: Int) -> Int32? {
        guard !table.isEmpty, text.count <= Int16.max else { return nil }
        let mask = table.count - 1
        var position = Int(UInt32(truncatingIfNeeded: hash)) & mask
        while table[position] != Self.empty {
            let candidate = table[position]
            if candidate >= 0 && hashes[Int(candidate)] == UInt32(truncatingIfNeeded: hash) && equals(Int(candidate), text) {
                return candidate
            }
            position = (position + 1) & mask
        }
        return nil
    }

    /// Gives `slot` (an existing one, or the next new one) the text `text`.
    mutating func set(slot: Int, text: [UInt8], indexed isIndexed: Bool) {
        set(slot: slot, text: text[...], indexed: isIndexed, hash: nil)
    }

    mutating func set(slot: Int, text: ArraySlice<UInt8>, indexed isIndexed: Bool, hash: Int?) {
        if slot == texts.start.count {
            texts.start.append(0)
            texts.length.append(-1)
            indexed.append(false)
            hashes.append(0)
        }
        precondition(texts.length[slot] < 0, "a slot's text is set once until cleared")
        precondition(text.count <= Int16.max, "a label text is at most 32 KiB")
        texts.start[slot] = texts.append(text)
        texts.length[slot] = Int16(text.count)
        liveBytes += text.count
        // Indexed after the insert: a rebuild on the way must not see it twice.
        if isIndexed {
            let hash = hash ?? Self.hash(text)
            hashes[slot] = UInt32(truncatingIfNeeded: hash)
            addToIndex(Int32(slot), hash: Int(hashes[slot]))
        }
        indexed[slot] = isIndexed
    }

    mutating func clear(slot: Int) {
        guard texts.length[slot] >= 0 else { return }
        if indexed[slot] { removeFromIndex(Int32(slot)) }
        liveBytes -= Int(texts.length[slot])
        deadBytes += Int(texts.length[slot])
        texts.length[slot] = -1
        indexed[slot] = false
        if deadBytes > max(liveBytes, 1 << 16) {
            texts.compact()
            deadBytes = 0
        }
    }

    // MARK: Index

    private mutating func addToIndex(_ slot: Int32, hash: Int) {
        if (tableUsed + 1) * 2 > table.count { rebuildIndex(capacityFor: indexedCount + 1) }
        let mask = table.count - 1
        var position = Int(UInt32(truncatingIfNeeded: hash)) & mask
        while table[position] >= 0 { position = (position + 1) & mask }
        if table[position] == Self.empty { tableUsed += 1 }
        table[position] = slot
        indexedCount += 1
    }

    private mutating func removeFromIndex(_ slot: Int32) {
        let mask = table.count - 1
        var position = Int(hashes[Int(slot)]) & mask
        while table[position] != slot { position = (position + 1) & mask }
        table[position] = Self.deleted
        indexedCount -= 1
    }

    /// A new table without tombstones, at most half full.
    private mutating func rebuildIndex(capacityFor count: Int) {
        var size = 16
        while size < count * 2 { size *= 2 }
        table = [Int32](repeating: Self.empty, count: size)
        tableUsed = 0
        let mask = size - 1
        for slot in indexed.indices where indexed[slot] {
            var position = Int(hashes[slot]) & mask
            while table[position] != Self.empty { position = (position + 1) & mask }
            table[position] = Int32(slot)
            tableUsed += 1
        }
    }

    private func equals(_ slot: Int, _ text: ArraySlice<UInt8>) -> Bool {
        guard Int(texts.length[slot]) == text.count else { return false }
        guard !text.isEmpty else { return true }
        return withText(of: slot) { stored in
            text.withUnsafeBytes { memcmp(stored.baseAddress!, $0.baseAddress!, text.count) == 0 }
        }
    }

    static func hash(_ text: ArraySlice<UInt8>) -> Int {
        text.withUnsafeBytes(hash)
    }

    private static func hash(_ bytes: UnsafeRawBufferPointer) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return hasher.finalize()
    }
}

/// The label texts by slot: 64 KiB chunks, and where each text is.
struct LabelTexts: Sendable {
    static let chunkSize = 1 << 16
    /// The longest text ever stored (a bound for the render's buffer).
    fileprivate(set) var longestText = 0

    fileprivate(set) var chunks: [[UInt8]] = []
    /// chunk * chunkSize + offset.
    fileprivate var start: [UInt32] = []
    /// -1: the slot holds no text.
    fileprivate var length: [Int16] = []

    func text(of slot: Int) -> ArraySlice<UInt8> {
        let place = Int(start[slot])
        let offset = place & (Self.chunkSize - 1)
        return chunks[place / Self.chunkSize][offset..<offset + Int(length[slot])]
    }

    /// The text of `slot` as raw bytes, without an array of its own.
    @inline(__always)
    func withText<R>(of slot: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let place = Int(start[slot])
        let offset = place & (Self.chunkSize - 1)
        let count = Int(length[slot])
        return chunks[place / Self.chunkSize].withUnsafeBytes {
            body(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + count]))
        }
    }

    /// Appends `text` to the last chunk, or to a new one: a text never
    /// spans two chunks, and a chunk never grows past its reserved size.
    fileprivate mutating func append<Bytes: Collection<UInt8>>(_ text: Bytes) -> UInt32 {
        if chunks.isEmpty || chunks[chunks.count - 1].count + text.count > Self.chunkSize {
            var chunk: [UInt8] = []
            chunk.reserveCapacity(Self.chunkSize)
            chunks.append(chunk)
        }
        longestText = max(longestText, text.count)
        let last = chunks.count - 1
        let place = last * Self.chunkSize + chunks[last].count
        chunks[last].append(contentsOf: text)
        return UInt32(place)
    }

    /// Drops the texts of cleared slots (into new chunks: a snapshot keeps
    /// reading the old ones).
    fileprivate mutating func compact() {
        let old = self
        chunks = []
        for slot in start.indices where length[slot] >= 0 {
            start[slot] = append(old.text(of: slot))
        }
    }
}
