@testable import TCPTopCore
import Testing

/// The arena and its index against a plain dictionary model, through enough
/// churn to grow and rebuild the index and to compact the arena.
struct LabelTextStoreTests {
    @Test(arguments: [1, 2, 3])
    func agreesWithADictionaryThroughChurn(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        var store = LabelTextStore()
        var model: [[UInt8]: Int] = [:]       // text -> slot
        var textOfSlot: [Int: [UInt8]] = [:]  // live slots
        var freeSlots: [Int] = []
        var slotCount = 0
        for step in 0..<20_000 {
            if textOfSlot.isEmpty || Int.random(in: 0..<10, using: &random) < 6 {
                // A new text (sometimes one that exists: then it must be found).
                let text = Array("{pid=\"\(Int.random(in: 0..<3000, using: &random))\",x=\"\(String(repeating: "y", count: step % 50))\"}".utf8)
                if let slot = model[text] {
                    #expect(store.slot(for: text) == Int32(slot))
                    continue
                }
                #expect(store.slot(for: text) == nil)
                let slot = freeSlots.popLast() ?? { slotCount += 1; return slotCount - 1 }()
                store.set(slot: slot, text: text, indexed: true)
                model[text] = slot
                textOfSlot[slot] = text
            } else {
                let slot = textOfSlot.keys.randomElement(using: &random)!
                let text = textOfSlot.removeValue(forKey: slot)!
                model[text] = nil
                store.clear(slot: slot)
                freeSlots.append(slot)
                #expect(store.slot(for: text) == nil)
            }
        }
        for (slot, text) in textOfSlot {
            #expect(Array(store.text(of: slot)) == text)
            #expect(store.slot(for: text) == Int32(slot))
        }
        #expect(store.liveBytes == textOfSlot.values.reduce(0) { $0 + $1.count })
        // Compaction keeps the arena near the live bytes.
        #expect(store.arenaBytes <= store.liveBytes + max(store.liveBytes, 1 << 16))
    }

    @Test func unindexedTextsAreStoredButNotFound() {
        var store = LabelTextStore()
        let overflow = Array("{pid=\"__overflow__\"}".utf8)
        store.set(slot: 0, text: overflow, indexed: false)
        #expect(Array(store.text(of: 0)) == overflow)
        #expect(store.slot(for: overflow) == nil)
    }
}

/// xorshift64*: reproducible tests without Foundation.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}
