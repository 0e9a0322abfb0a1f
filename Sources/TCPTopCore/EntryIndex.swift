/// From a connection id to its index in the registry's entry array: open
/// addressing over 4-byte entry indexes, the id itself read from the entry.
/// At a million entries it takes 8 MB where a `[ConnectionID: Int]` took
/// 48 MB, and a lookup is a multiply instead of a SipHash.
struct EntryIndex {
    /// An entry index, or `empty` / `deleted`; the size is a power of two,
    /// at most half used (tombstones counted).
    private var table: [Int32] = []
    private var used = 0
    private var live = 0

    private static let empty: Int32 = -1
    private static let deleted: Int32 = -2

    /// The position of `id`'s entry, if indexed.
    func find(_ id: ConnectionID, in entries: [RegistryEntry]) -> Int? {
        guard !table.isEmpty else { return nil }
        let mask = table.count - 1
        var position = Self.hash(id) & mask
        while true {
            let candidate = table[position]
            if candidate == Self.empty { return nil }
            if candidate >= 0 && entries[Int(candidate)].has(id) { return Int(candidate) }
            position = (position + 1) & mask
        }
    }

    /// Loads the table entry where `id` starts (see `LabelTextStore.touch`).
    @inline(__always)
    func touch(_ id: ConnectionID) -> Int32 {
        table.isEmpty ? 0 : table[Self.hash(id) & (table.count - 1)]
    }

    /// Indexes the entry that is about to be appended at `index` (rebuilds
    /// index `entries`, which must not hold it yet).
    mutating func insert(_ id: ConnectionID, at index: Int, entries: [RegistryEntry]) {
        if (used + 1) * 2 > table.count { rebuild(capacityFor: live + 1, entries: entries) }
        let mask = table.count - 1
        var position = Self.hash(id) & mask
        while table[position] >= 0 { position = (position + 1) & mask }
        if table[position] == Self.empty { used += 1 }
        table[position] = Int32(index)
        live += 1
    }

    /// Room for `count` entries in all (never fewer than are indexed)
    /// without a rebuild: one resize for a first big read.
    mutating func reserve(_ count: Int, entries: [RegistryEntry]) {
        let needed = max(count, entries.count)
        if (needed + used - live) * 2 > table.count { rebuild(capacityFor: needed, entries: entries) }
    }

    mutating func remove(_ id: ConnectionID, at index: Int) {
        table[position(of: id, index: index)] = Self.deleted
        live -= 1
    }

    /// The entry of `id` moved from `old` to `new` (the registry's swap-remove).
    mutating func move(_ id: ConnectionID, from old: Int, to new: Int) {
        table[position(of: id, index: old)] = Int32(new)
    }

    private func position(of id: ConnectionID, index: Int) -> Int {
        let mask = table.count - 1
        var position = Self.hash(id) & mask
        while table[position] != Int32(index) { position = (position + 1) & mask }
        return position
    }

    /// A table without tombstones, at most half full after it.
    private mutating func rebuild(capacityFor count: Int, entries: [RegistryEntry]) {
        var size = 16
        while size < max(count, entries.count) * 2 { size *= 2 }
        table = [Int32](repeating: Self.empty, count: size)
        used = 0
        live = 0
        let mask = size - 1
        for index in entries.indices {
            var position = Self.hash(entries[index].id) & mask
            while table[position] != Self.empty { position = (position + 1) & mask }
            table[position] = Int32(index)
            used += 1
            live += 1
        }
    }

    /// Cookies are near-sequential: Fibonacci hashing spreads them over the top bits.
    private static func hash(_ id: ConnectionID) -> Int {
        let mixed = (id.cookie ^ (UInt64(id.pid) << 40)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: mixed >> 20 ^ mixed >> 44)
    }
}
