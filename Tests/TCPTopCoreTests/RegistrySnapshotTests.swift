import Testing
import TCPTopCore

/// A scrape's snapshot: rendered after the registry moved on, it still says
/// what the registry held when it was taken; its pieces make the same text
/// as one buffer.
@Suite struct RegistrySnapshotTests {
    let views = [
        ViewConfig(),
        ViewConfig(prefix: "comm", labels: [.comm]),
        ViewConfig(prefix: "capped", labels: [.pid], maxSeries: 2),
        ViewConfig(prefix: "total", labels: []),
    ]

    private func text(_ snapshot: RegistrySnapshot, pieceSize: Int = 1 << 16) -> String {
        var bytes: [UInt8] = []
        snapshot.write(pieceSize: pieceSize) { bytes.append(contentsOf: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func connections(_ count: Int, from first: UInt64, sent: UInt64) -> [ConnectionSample] {
        (0..<UInt64(count)).map {
            sample(cookie: first + $0, pid: UInt32(($0 + first) % 5), comm: "p\(($0 + first) % 3)",
                   lport: UInt16(1000 + ($0 + first) % 60_000), sent: sent + $0, received: 2 * $0)
        }
    }

    @Test func snapshotKeepsItsMomentThroughUpdatesInsertsRemovalsAndCompaction() {
        let registry = ConnectionRegistry(views: views, closedRetention: 0)
        registry.update(with: connections(300, from: 1, sent: 10), now: 0)
        let snapshot = registry.snapshot()
        let before = text(snapshot)
        var oneBuffer = ExpositionWriter()
        registry.render(into: &oneBuffer)
        #expect(oneBuffer.text == before)

        // Counters move, every old end goes away (its series expire at once:
        // retention 0) and enough new ones arrive to compact the label texts.
        for round in 1...4 {
            registry.update(with: connections(2000, from: UInt64(round) * 10_000, sent: 99), now: Double(round) * 10)
        }
        #expect(text(registry.snapshot()) != before)
        #expect(text(snapshot) == before)
    }

    @Test(arguments: [1, 100, 4096, 1 << 16])
    func piecesConcatenatedEqualTheOneBufferRender(pieceSize: Int) {
        let registry = ConnectionRegistry(views: views, closedRetention: 300)
        registry.update(with: connections(3000, from: 1, sent: 7), now: 0)
        var oneBuffer = ExpositionWriter()
        registry.render(into: &oneBuffer)
        var pieces: [[UInt8]] = []
        registry.snapshot().write(pieceSize: pieceSize, trailer: Array("# end\n".utf8)) { pieces.append(Array($0)) }
        #expect(String(decoding: pieces.joined(), as: UTF8.self) == oneBuffer.text + "# end\n")
        // Each piece ends at a line end and holds at most one line past the size asked.
        for piece in pieces {
            #expect(piece.last == UInt8(ascii: "\n"))
            #expect(piece.count < pieceSize + 400)
        }
        if pieceSize == 1 << 16 { #expect(pieces.count == (oneBuffer.bytes.count + 6) / pieceSize + 1) }
    }

    @Test func emptyRegistryWritesOnlyTheTrailer() {
        let registry = ConnectionRegistry(views: views, closedRetention: 300)
        var pieces: [[UInt8]] = []
        registry.snapshot().write(trailer: Array("x 1\n".utf8)) { pieces.append(Array($0)) }
        #expect(pieces == [Array("x 1\n".utf8)])
        registry.snapshot().write { pieces.append(Array($0)) }
        #expect(pieces.count == 1)
    }

    /// Values of every label, long and escaped, survive the values-only storage.
    @Test func longAndEscapedLabelValuesRenderWhole() {
        let registry = ConnectionRegistry(closedRetention: 300)
        let long = String(repeating: "a\u{E9}\"", count: 200)  // 800 bytes escaped: a three-byte length
        registry.update(with: [sample(cookie: 1, laddr: long, sent: 5, received: 6)], now: 0)
        let values = renderedValues(registry)
        let escaped = String(repeating: "a\u{E9}\\\"", count: 200)
        #expect(values[#"tcptop_sent_bytes_total{pid="100",comm="curl",family="ipv4",laddr="\#(escaped)",lport="40000",raddr="10.0.0.2",rport="443"}"#] == 5)
    }
}
