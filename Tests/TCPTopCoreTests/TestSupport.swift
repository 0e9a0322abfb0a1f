import TCPTopCore

/// A connection end sample with readable defaults for tests.
func sample(
    cookie: UInt64, pid: UInt32 = 100, comm: String = "curl", family: AddressFamily = .ipv4,
    laddr: String = "10.0.0.1", lport: UInt16 = 40000, raddr: String = "10.0.0.2", rport: UInt16 = 443,
    sent: UInt64, received: UInt64, closed: Bool = false, retransmits: UInt64 = 0, rtt: UInt32 = 0
) -> ConnectionSample {
    ConnectionSample(
        id: ConnectionID(cookie: cookie, pid: pid),
        labels: ConnectionLabels(
            pid: pid, comm: Array(comm.utf8), family: family,
            localAddress: laddr, localPort: lport, remoteAddress: raddr, remotePort: rport),
        sentBytes: sent, receivedBytes: received, closed: closed,
        retransmittedSegments: retransmits, smoothedRTTMicroseconds: rtt)
}

/// Every sample the registry renders as `series text → value text`, where
/// the series text is the sample line up to its last space (name and labels).
func renderedSamples(_ registry: ConnectionRegistry) -> [String: String] {
    var writer = ExpositionWriter()
    registry.render(into: &writer)
    var values: [String: String] = [:]
    for line in writer.text.split(separator: "\n") where !line.hasPrefix("#") {
        let space = line.lastIndex(of: " ")!
        let series = String(line[..<space])
        precondition(values[series] == nil, "duplicate series \(series)")
        values[series] = String(line[line.index(after: space)...])
    }
    return values
}

/// The samples of the counter families whose names end in one of
/// `suffixes` (the byte families unless told), as `series text → value`.
func renderedValues(_ registry: ConnectionRegistry, families suffixes: [String] = ["_bytes_total"]) -> [String: UInt64] {
    var values: [String: UInt64] = [:]
    for (series, value) in renderedSamples(registry) {
        let name = series.prefix { $0 != "{" }
        if suffixes.contains(where: { name.hasSuffix($0) }) { values[series] = UInt64(value)! }
    }
    return values
}

/// The `_rtt_seconds` samples as `series text → value text`.
func renderedRTT(_ registry: ConnectionRegistry) -> [String: String] {
    renderedSamples(registry).filter { $0.key.prefix { $0 != "{" }.hasSuffix("_rtt_seconds") }
}

/// Deterministic pseudo-random numbers, so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The health families without the connection outcomes: a close is then no
/// activity, and a series expires the retention after its last bytes
/// (with them, a close is counted, so the series lasts the retention from it).
let withoutLifecycle: HealthFamilies = [.retransmits, .rtt]
