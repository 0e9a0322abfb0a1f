/// Per-series counters that most series never need (connection outcomes,
/// histograms), stored only for the series that have some: a slot's record
/// is `stride` integers in one flat array, found through `recordOf`. The
/// index itself is grown only as far as the highest slot that got a record.
struct SlotRecords: Sendable {
    let stride: Int
    /// Record number of each slot, or -1; slots past its end have none.
    private(set) var recordOf: [Int32] = []
    private(set) var cells: [UInt64] = []
    private var freeRecords: [Int32] = []

    init(stride: Int) { self.stride = stride }

    /// Records held (free ones included): what they cost is `stride` × 8 bytes each.
    var recordCount: Int { cells.count / stride }

    func record(of slot: Int) -> Int? {
        guard slot < recordOf.count, recordOf[slot] >= 0 else { return nil }
        return Int(recordOf[slot])
    }

    /// The first cell of `slot`'s record, made (all zeros) if it has none.
    mutating func base(of slot: Int) -> Int {
        if let record = record(of: slot) { return record * stride }
        if slot >= recordOf.count { recordOf.append(contentsOf: repeatElement(-1, count: slot + 1 - recordOf.count)) }
        let record: Int
        if let free = freeRecords.popLast() {
            record = Int(free)
        } else {
            record = recordCount
            cells.append(contentsOf: repeatElement(0, count: stride))
        }
        recordOf[slot] = Int32(record)
        return record * stride
    }

    mutating func add(_ value: UInt64, at cell: Int, of slot: Int) {
        let base = base(of: slot)
        cells[base + cell] &+= value
    }

    /// Moves `slot`'s record into `target`'s (an expired overflowed label set into the overflow series).
    mutating func merge(_ slot: Int, into target: Int) {
        guard let record = record(of: slot) else { return }
        let into = base(of: target)
        for cell in 0..<stride { cells[into + cell] &+= cells[record * stride + cell] }
        free(slot)
    }

    mutating func free(_ slot: Int) {
        guard let record = record(of: slot) else { return }
        for cell in 0..<stride { cells[record * stride + cell] = 0 }
        recordOf[slot] = -1
        freeRecords.append(Int32(record))
    }

    /// The sum of the records of `slots`, or nil when none has one.
    func sum(of slots: some Sequence<Int>) -> [UInt64]? {
        var total: [UInt64]?
        for slot in slots {
            guard let record = record(of: slot) else { continue }
            if total == nil { total = [UInt64](repeating: 0, count: stride) }
            for cell in 0..<stride { total![cell] &+= cells[record * stride + cell] }
        }
        return total
    }
}

/// A view's histogram: its upper bounds as the largest whole microsecond
/// each admits (an observation of `v` µs is counted in a bucket when
/// v / 1e6 <= bound), and its records per series: one count per bucket,
/// the `+Inf` one last, then the sum in microseconds.
struct SlotHistogram: Sendable {
    let text: FamilyText
    let thresholds: [UInt64]
    /// `le="0.005"` and so on, `+Inf` last.
    let leTexts: [[UInt8]]
    private(set) var records: SlotRecords

    init(name: String, help: String, bounds: [Double]) {
        text = FamilyText(name: name, help: help, type: .histogram)
        thresholds = bounds.map(Self.threshold)
        leTexts = (bounds.map(prometheusFloatText) + ["+Inf"]).map { Array("le=\"\($0)\"".utf8) }
        records = SlotRecords(stride: bounds.count + 2)
    }

    var sumCell: Int { thresholds.count + 1 }

    mutating func observe(_ microseconds: UInt64, slot: Int) {
        var bucket = 0
        while bucket < thresholds.count && microseconds > thresholds[bucket] { bucket += 1 }
        records.add(1, at: bucket, of: slot)
        records.add(microseconds, at: sumCell, of: slot)
    }

    mutating func merge(_ slot: Int, into target: Int) { records.merge(slot, into: target) }
    mutating func free(_ slot: Int) { records.free(slot) }

    /// The largest whole microsecond count `m` with m / 1e6 <= bound, as
    /// Prometheus compares an observation in seconds with `le`.
    static func threshold(_ bound: Double) -> UInt64 {
        var micros = UInt64((bound * 1e6).rounded(.down))
        while Double(micros + 1) / 1e6 <= bound { micros += 1 }
        while micros > 0 && Double(micros) / 1e6 > bound { micros -= 1 }
        return micros
    }
}

/// A float as Prometheus' Go clients write it (strconv 'g', shortest):
/// 0.005, 2.5, 5, 100000, 1e+06, 1e-05.
func prometheusFloatText(_ value: Double) -> String {
    if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
    if value.isNaN { return "NaN" }
    if value == 0 { return "0" }
    let negative = value < 0
    // Swift's description is the shortest text that reads back: take its digits and exponent.
    let text = "\(abs(value))"
    let parts = text.split(separator: "e", maxSplits: 1)
    let mantissa = parts[0]
    let exponent = parts.count > 1 ? Int(parts[1])! : 0
    let point = mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count
    var digits = Array(mantissa.filter { $0 != "." })
    var decimalPoint = point + exponent  // digits[0..<decimalPoint] are the integer part
    while digits.first == "0" {
        digits.removeFirst()
        decimalPoint -= 1
    }
    while digits.last == "0" { digits.removeLast() }
    let exp = decimalPoint - 1
    var out = negative ? "-" : ""
    if exp < -4 || exp >= 6 {
        out.append(digits[0])
        if digits.count > 1 { out += "." + String(digits[1...]) }
        out += exp < 0 ? "e-" : "e+"
        let magnitude = abs(exp)
        out += magnitude < 10 ? "0\(magnitude)" : "\(magnitude)"
    } else if decimalPoint <= 0 {
        out += "0." + String(repeating: "0", count: -decimalPoint) + String(digits)
    } else if decimalPoint >= digits.count {
        out += String(digits) + String(repeating: "0", count: decimalPoint - digits.count)
    } else {
        out += String(digits[..<decimalPoint]) + "." + String(digits[decimalPoint...])
    }
    return out
}
