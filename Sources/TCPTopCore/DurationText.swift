/// Parses a Prometheus-style duration: whole numbers with units from
/// largest to smallest, each at most once, like `500ms`, `30s`, `5m`, `1h`,
/// `1m30s`, `2d`. Units: y (365d), w, d, h, m, s, ms. Plain `0` is zero.
/// Returns nil for anything else.
public func parseDuration(_ text: String) -> Duration? {
    if text == "0" { return .zero }
    let units: [(suffix: String, milliseconds: Int64)] = [
        ("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000),
        ("h", 3_600_000), ("ms", 1), ("m", 60_000), ("s", 1000),
    ]
    // The order above is the parsing order; `ms` must be tried before `m`.
    let magnitude: [String: Int] = ["y": 6, "w": 5, "d": 4, "h": 3, "m": 2, "s": 1, "ms": 0]

    var rest = Substring(text)
    var total: Int64 = 0
    var smallestSoFar = Int.max
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let digits = rest.prefix(while: { $0.isASCII && $0.isWholeNumber })
        guard !digits.isEmpty, let number = Int64(digits) else { return nil }
        rest = rest.dropFirst(digits.count)
        guard let unit = units.first(where: { rest.hasPrefix($0.suffix) }),
              let rank = magnitude[unit.suffix], rank < smallestSoFar
        else { return nil }
        smallestSoFar = rank
        rest = rest.dropFirst(unit.suffix.count)
        let (part, overflow1) = number.multipliedReportingOverflow(by: unit.milliseconds)
        let (sum, overflow2) = total.addingReportingOverflow(part)
        guard !overflow1, !overflow2 else { return nil }
        total = sum
    }
    return .milliseconds(total)
}
