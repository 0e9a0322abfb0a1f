/// A writer of the Prometheus text exposition format 0.0.4.
///
/// It appends straight into a byte buffer: the registry writes hundreds of
/// thousands of samples per scrape, so the hot path (`sample` with
/// preformatted labels and a `UInt64`) allocates nothing per sample.
/// The writer does not check names; callers pass valid metric and label names.
public struct ExpositionWriter: Sendable {
    public var bytes: [UInt8]

    /// The `Content-Type` of what this writer produces.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public init(reservingCapacity capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// The text written so far (always valid UTF-8).
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Writes the `# HELP` and `# TYPE` lines that open a metric family.
    public mutating func family(name: String, help: String, type: MetricType) {
        append("# HELP ")
        append(name)
        bytes.append(space)
        for byte in help.utf8 {
            switch byte {
            case backslash: bytes.append(backslash); bytes.append(backslash)
            case newline: bytes.append(backslash); bytes.append(letterN)
            default: bytes.append(byte)
            }
        }
        bytes.append(newline)
        append("# TYPE ")
        append(name)
        bytes.append(space)
        append(type.rawValue)
        bytes.append(newline)
    }

    public mutating func sample(name: String, labels: [(String, String)] = [], value: UInt64) {
        sampleStart(name: name, labels: labels)
        appendDecimal(value)
        bytes.append(newline)
    }

    public mutating func sample(name: String, labels: [(String, String)] = [], value: Double) {
        sampleStart(name: name, labels: labels)
        appendValue(value)
        bytes.append(newline)
    }

    /// `preformattedLabels` is the complete, already escaped `{a="b",...}`
    /// text (or empty for no labels), as `formattedLabels` produces it.
    public mutating func sample(name: String, preformattedLabels: [UInt8], value: UInt64) {
        append(name)
        bytes.append(contentsOf: preformattedLabels)
        bytes.append(space)
        appendDecimal(value)
        bytes.append(newline)
    }

    /// The hot path: name and labels both already bytes.
    public mutating func sample(nameBytes: [UInt8], preformattedLabels: [UInt8], value: UInt64) {
        sample(nameBytes: nameBytes, preformattedLabels: preformattedLabels[...], value: value)
    }

    public mutating func sample(nameBytes: [UInt8], preformattedLabels: ArraySlice<UInt8>, value: UInt64) {
        bytes.append(contentsOf: nameBytes)
        bytes.append(contentsOf: preformattedLabels)
        bytes.append(space)
        appendDecimal(value)
        bytes.append(newline)
    }

    private mutating func sampleStart(name: String, labels: [(String, String)]) {
        append(name)
        if !labels.isEmpty {
            bytes.append(contentsOf: formattedLabels(labels.map { ($0.0, escapedLabelValue($0.1)) }))
        }
        bytes.append(space)
    }

    private mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    /// Decimal digits written backwards into a stack buffer, then copied once.
    public mutating func appendDecimal(_ value: UInt64) {
        if value < 10 {
            bytes.append(zero &+ UInt8(truncatingIfNeeded: value))
            return
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = value
            var start = 20
            while rest != 0 {
                let (quotient, remainder) = rest.quotientAndRemainder(dividingBy: 10)
                start -= 1
                digits[start] = zero &+ UInt8(truncatingIfNeeded: remainder)
                rest = quotient
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start..<20]))
        }
    }

    /// Formats like Prometheus: `NaN`, `+Inf`, `-Inf`; integers that a
    /// Double holds exactly without an exponent; others as shortest round-trip text.
    public mutating func appendValue(_ value: Double) {
        if value.isNaN {
            append("NaN")
        } else if value.isInfinite {
            append(value > 0 ? "+Inf" : "-Inf")
        } else if value == value.rounded(.towardZero), value.magnitude < 0x1p63 {
            if value < 0 { bytes.append(minus) }
            appendDecimal(UInt64(value.magnitude))
        } else {
            append(value.description)
        }
    }
}

public enum MetricType: String, Sendable {
    case counter, gauge, histogram, untyped
}

/// Label value bytes escaped for the exposition format. Any bytes are
/// accepted (a process name is raw kernel bytes): sequences that are not
/// valid UTF-8 become U+FFFD, then `\`, `"` and newline are escaped.
public func escapedLabelValue(_ raw: [UInt8]) -> [UInt8] {
    // Common case: printable ASCII with nothing to escape is returned as is.
    if raw.allSatisfy({ $0 < 0x80 && $0 != backslash && $0 != quote && $0 != newline }) {
        return raw
    }
    return escapedLabelValue(String(decoding: raw, as: UTF8.self))
}

/// Label value text escaped for the exposition format.
public func escapedLabelValue(_ text: String) -> [UInt8] {
    var escaped: [UInt8] = []
    escaped.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
        switch byte {
        case backslash: escaped.append(backslash); escaped.append(backslash)
        case quote: escaped.append(backslash); escaped.append(quote)
        case newline: escaped.append(backslash); escaped.append(letterN)
        default: escaped.append(byte)
        }
    }
    return escaped
}

/// `{name="value",...}` from label names and already escaped values;
/// empty when there are no labels.
public func formattedLabels(_ labels: [(name: String, escapedValue: [UInt8])]) -> [UInt8] {
    guard !labels.isEmpty else { return [] }
    var text: [UInt8] = [UInt8(ascii: "{")]
    for (index, label) in labels.enumerated() {
        if index > 0 { text.append(UInt8(ascii: ",")) }
        text.append(contentsOf: label.name.utf8)
        text.append(UInt8(ascii: "="))
        text.append(quote)
        text.append(contentsOf: label.escapedValue)
        text.append(quote)
    }
    text.append(UInt8(ascii: "}"))
    return text
}

private let backslash = UInt8(ascii: "\\")
private let quote = UInt8(ascii: "\"")
private let newline = UInt8(ascii: "\n")
private let letterN = UInt8(ascii: "n")
private let space = UInt8(ascii: " ")
private let zero = UInt8(ascii: "0")
private let minus = UInt8(ascii: "-")
