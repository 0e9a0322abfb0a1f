/// The usual text form of an address in network byte order: a dotted quad
/// for IPv4 (the first 4 bytes), the RFC 5952 form for IPv6 (the first 16).
/// Written in Swift rather than with `inet_ntop` because glibc prints
/// `::2:3` as the deprecated IPv4-compatible `::0.2.0.3`.
public func addressText(family: AddressFamily, bytes: [UInt8]) -> String {
    switch family {
    case .ipv4:
        precondition(bytes.count >= 4, "an IPv4 address needs 4 bytes")
        return ipv4Text(bytes[0..<4])
    case .ipv6:
        precondition(bytes.count >= 16, "an IPv6 address needs 16 bytes")
        return ipv6Text(bytes[0..<16])
    }
}

private func ipv4Text(_ bytes: ArraySlice<UInt8>) -> String {
    bytes.map { String($0) }.joined(separator: ".")
}

private func ipv6Text(_ bytes: ArraySlice<UInt8>) -> String {
    let start = bytes.startIndex
    let words = (0..<8).map { UInt16(bytes[start + 2 * $0]) << 8 | UInt16(bytes[start + 2 * $0 + 1]) }

    // RFC 5952 §5: IPv4-mapped addresses end in dotted-quad notation.
    if words[0..<5].allSatisfy({ $0 == 0 }) && words[5] == 0xffff {
        return "::ffff:" + ipv4Text(bytes[(start + 12)...])
    }

    // §4.2: "::" replaces the longest run of two or more zero words, the first one on a tie.
    var bestStart = -1
    var bestLength = 1
    var index = 0
    while index < 8 {
        guard words[index] == 0 else { index += 1; continue }
        var end = index
        while end < 8 && words[end] == 0 { end += 1 }
        if end - index > bestLength { bestStart = index; bestLength = end - index }
        index = end
    }

    // §4.3: lowercase hex without leading zeros.
    func hex(_ range: Range<Int>) -> String {
        words[range].map { String($0, radix: 16) }.joined(separator: ":")
    }
    guard bestStart >= 0 else { return hex(0..<8) }
    return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
}
