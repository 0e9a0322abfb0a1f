/// Parses a Prometheus-style duration: whole numbers with units from
/// largest to smallest, each at most once, like `500ms`, `30s`, `5m`, `1h`,
/// `1m30s`, `2d`. Units: y (365d), w, d, h, m, s, ms. Plain `0` is zero.
/// Returns nil for anything else, and for a duration too long to count in
/// milliseconds (see `readDuration` to tell the two apart).
public func parseDuration(_ text: String) -> Duration? {
    if case .duration(let duration) = readDuration(text) { return duration }
    return nil
}

/// What `readDuration` found in a text.
public enum DurationReading: Equatable, Sendable {
    case duration(Duration)
    /// Written as a duration, but longer than Int64 milliseconds (about 292 million years).
    case tooLong
    case invalid
}

/// `parseDuration`, telling "not a duration" from "a duration too long":
/// `9999999999999999h` is well-formed but overflows, and a config key
/// then says it is over its bound rather than "must be a duration".
public func readDuration(_ text: String) -> DurationReading {
    if text == "0" { return .duration(.zero) }
    let units: [(suffix: String, milliseconds: Int64)] = [
        ("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000),
        ("h", 3_600_000), ("ms", 1), ("m", 60_000), ("s", 1000),
    ]
    // The order above is the parsing order; `ms` must be tried before `m`.
    let magnitude: [String: Int] = ["y": 6, "w": 5, "d": 4, "h": 3, "m": 2, "s": 1, "ms": 0]

    var rest = Substring(text)
    var total: Int64 = 0
    var overflowed = false
    var smallestSoFar = Int.max
    guard !rest.isEmpty else { return .invalid }
    while !rest.isEmpty {
        let digits = rest.prefix(while: { $0.isASCII && $0.isWholeNumber })
        guard !digits.isEmpty else { return .invalid }
        rest = rest.dropFirst(digits.count)
        guard let unit = units.first(where: { rest.hasPrefix($0.suffix) }),
              let rank = magnitude[unit.suffix], rank < smallestSoFar
        else { return .invalid }
        smallestSoFar = rank
        rest = rest.dropFirst(unit.suffix.count)
        // Past Int64 the rest is still read, so that a bad unit later on is "invalid".
        guard !overflowed, let number = Int64(digits) else { overflowed = true; continue }
        let (part, overflow1) = number.multipliedReportingOverflow(by: unit.milliseconds)
        let (sum, overflow2) = total.addingReportingOverflow(part)
        if overflow1 || overflow2 { overflowed = true; continue }
        total = sum
    }
    return overflowed ? .tooLong : .duration(.milliseconds(total))
}

/// A duration as the config file writes it, largest units first, for
/// error texts: `1h`, `1w`, `1m30s`, `500ms`. Whole milliseconds only.
public func durationText(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    var milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    if milliseconds == 0 { return "0" }
    var text = ""
    for (suffix, size) in [("y", Int64(365 * 86_400_000)), ("w", 7 * 86_400_000), ("d", 86_400_000),
                           ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] where milliseconds >= size {
        text += "\(milliseconds / size)\(suffix)"
        milliseconds %= size
    }
    return text
}
