import TCPTopCore

/// A connection end sample with readable defaults for tests.
func sample(
    cookie: UInt64, pid: UInt32 = 100, comm: String = "curl", family: AddressFamily = .ipv4,
    laddr: String = "10.0.0.1", lport: UInt16 = 40000, raddr: String = "10.0.0.2", rport: UInt16 = 443,
    sent: UInt64, received: UInt64, closed: Bool = false
) -> ConnectionSample {
    ConnectionSample(
        id: ConnectionID(cookie: cookie, pid: pid),
        labels: ConnectionLabels(
            pid: pid, comm: Array(comm.utf8), family: family,
            localAddress: laddr, localPort: lport, remoteAddress: raddr, remotePort: rport),
        sentBytes: sent, receivedBytes: received, closed: closed)
}

/// The registry's output as `series text → value`, where the series text is
/// the sample line up to its last space (name and labels).
func renderedValues(_ registry: ConnectionRegistry) -> [String: UInt64] {
    var writer = ExpositionWriter()
    registry.render(into: &writer)
    var values: [String: UInt64] = [:]
    for line in writer.text.split(separator: "\n") where !line.hasPrefix("#") {
        let space = line.lastIndex(of: " ")!
        let series = String(line[..<space])
        precondition(values[series] == nil, "duplicate series \(series)")
        values[series] = UInt64(line[line.index(after: space)...])!
    }
    return values
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
