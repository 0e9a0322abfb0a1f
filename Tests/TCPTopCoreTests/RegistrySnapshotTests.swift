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
        ViewConfig(prefix: "total", labels: [], connectDurationBuckets: [0.001, 0.1], connectionDurationBuckets: [1, 10],
                   rttBuckets: [0.01]),
    ]

    private func text(_ snapshot: RegistrySnapshot, pieceSize: Int = 1 << 16) -> String {
        var bytes: [UInt8] = []
        snapshot.write(pieceSize: pieceSize) { bytes.append(contentsOf: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func connections(_ count: Int, from first: UInt64, sent: UInt64) -> [ConnectionSample] {
        (0..<UInt64(count)).map {
            var end = sample(cookie: first + $0, pid: UInt32(($0 + first) % 5), comm: "p\(($0 + first) % 3)",
                             lport: UInt16(1000 + ($0 + first) % 60_000), sent: sent + $0, received: 2 * $0,
                             retransmits: ($0 + sent) % 7, rtt: UInt32(($0 + sent) % 4) * 12_345)  // a quarter unknown
            // Outcomes of every kind: roles, connect times, failures, resets (some ends close in each read).
            let kind = ($0 + first) % 6
            end.closed = kind == 5
            end.lifecycle = ConnectionLifecycle(
                role: kind == 0 ? .unknown : kind % 2 == 0 ? .server : .client, established: kind != 3,
                connectError: kind == 3 ? 111 : 0, connectMicroseconds: kind == 1 ? UInt32(($0 + sent) * 37) : 0,
                lifetimeMicroseconds: kind == 5 ? ($0 + sent) * 1_234 : 0, resetsSent: UInt32(kind == 4 ? 1 : 0),
                resetsReceived: UInt32(($0 + sent) % 5 == 0 ? 2 : 0))
            return end
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

/// The registry's id index, read-order hint and batched inserts against a
/// dictionary: reads in any order, cookies in any order (not only rising),
/// an end read live then closed in the same read, ends that vanish.
@Suite struct RegistryIndexTests {
    @Test(arguments: [1 as UInt64, 2, 3, 4])
    func anyReadOrderAndCookieOrderAgreeWithADictionary(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let registry = ConnectionRegistry(closedRetention: 1e9)  // nothing expires: every series stays
        var open: [UInt64: ConnectionSample] = [:]
        var expected: [UInt64: UInt64] = [:]  // cookie -> sent (each end its own series: distinct lport)
        var usedCookies: Set<UInt64> = []
        for step in 0..<400 {
            var read: [ConnectionSample] = []
            for _ in 0..<Int(random.next() % 40) {
                var cookie = random.next() % 100_000 + 1
                while usedCookies.contains(cookie) { cookie = random.next() % 100_000 + 1 }
                usedCookies.insert(cookie)
                open[cookie] = sample(cookie: cookie, pid: UInt32(cookie % 7), lport: UInt16(cookie % 60_000),
                                      raddr: "10.1.\(cookie / 60_000).1", sent: 0, received: 0)
            }
            for cookie in open.keys.sorted() {
                var connection = open[cookie]!
                let fate = random.next() % 20
                if fate == 0 {  // vanishes from the kernel: the last read's counts stay
                    open[cookie] = nil
                    continue
                }
                connection.sentBytes += random.next() % 100
                expected[cookie] = connection.sentBytes
                read.append(connection)
                if fate == 1 {  // read live, then closed with more bytes, in one read
                    connection.sentBytes += 5
                    connection.closed = true
                    expected[cookie] = connection.sentBytes
                    read.append(connection)
                    open[cookie] = nil
                } else {
                    open[cookie] = connection
                }
            }
            // Mostly the kernel's order, sometimes shuffled, so both the hint and the index are used.
            if random.next() % 3 == 0 { read.shuffle(using: &random) }
            registry.update(with: read, now: Double(step))
            #expect(registry.liveEntries == open.count)
        }
        var values: [UInt64: UInt64] = [:]
        for (series, value) in renderedValues(registry) where series.hasPrefix("tcptop_sent_bytes_total") {
            let lport = series.split(separator: "lport=\"")[1].prefix { $0 != "\"" }
            let raddr = series.split(separator: "raddr=\"10.1.")[1].prefix { $0 != "." }
            values[UInt64(raddr)! * 60_000 + UInt64(lport)!] = value
        }
        let wrong = expected.filter { values[$0.key] != $0.value }
        #expect(values.count == expected.count)
        #expect(wrong.isEmpty, "\(wrong.count) series differ, e.g. \(wrong.prefix(3).map { "\($0.key): \(values[$0.key].map(String.init) ?? "none") not \($0.value)" })")
    }
}

extension RegistryIndexTests {
    /// Many ends vanish (the index fills with tombstones), then reads far
    /// smaller than what the registry holds: the index is never sized below it.
    @Test func smallReadsAfterMassClosesKeepEveryEnd() {
        let registry = ConnectionRegistry(closedRetention: 1e9)
        let keep = (1...3000 as ClosedRange<UInt64>).map { sample(cookie: $0, lport: UInt16($0), sent: $0, received: 0) }
        var step = 0.0
        for round in 0..<4 {
            let churn = (0..<5000 as Range<UInt64>).map {
                sample(cookie: 10_000 + UInt64(round) * 5000 + $0, lport: UInt16($0 % 60_000), raddr: "10.9.9.\(round)", sent: 1, received: 0)
            }
            registry.update(with: keep + churn, now: step)
            step += 1
            registry.update(with: keep, now: step)  // the churn vanishes: 5000 tombstones
            step += 1
        }
        registry.update(with: Array(keep.prefix(10)) + Array(keep.suffix(2990)), now: step)
        #expect(registry.liveEntries == 3000)
        registry.update(with: Array(keep.prefix(5)), now: step + 1)
        #expect(registry.liveEntries == 5)
        #expect(renderedValues(registry)[#"tcptop_sent_bytes_total{pid="100",comm="curl",family="ipv4",laddr="10.0.0.1",lport="3",raddr="10.0.0.2",rport="443"}"#] == 3)
    }
}
