/// Reads samples back from the Prometheus text format: what `tcptop --from`
/// and the end-to-end tests need. Comments and HELP/TYPE lines are skipped;
/// timestamps, if present, are ignored.
public struct ParsedSample: Equatable, Sendable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
}

public struct ExpositionParseError: Error, CustomStringConvertible, Equatable {
    public var line: Int
    public var problem: String
    public var description: String { "line \(line): \(problem)" }
}

public enum ExpositionParser {
    public static func parse(_ text: String) throws -> [ParsedSample] {
        var samples: [ParsedSample] = []
        var problem = ""
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let sample = parseSample(Array(trimmed.utf8), problem: &problem) else {
                throw ExpositionParseError(line: number + 1, problem: problem)
            }
            samples.append(sample)
        }
        return samples
    }

    /// nil with `problem` set when the line is not a sample.
    private static func parseSample(_ bytes: [UInt8], problem: inout String) -> ParsedSample? {
        func fail(_ text: String) -> ParsedSample? {
            problem = text
            return nil
        }
        var index = 0
        while index < bytes.count, bytes[index] != UInt8(ascii: "{"), bytes[index] != UInt8(ascii: " ") { index += 1 }
        let name = String(decoding: bytes[0..<index], as: UTF8.self)
        if name.isEmpty { return fail("missing metric name") }
        var labels: [String: String] = [:]
        if index < bytes.count, bytes[index] == UInt8(ascii: "{") {
            index += 1
            while true {
                guard index < bytes.count else { return fail("unterminated label set") }
                if bytes[index] == UInt8(ascii: "}") { index += 1; break }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                let nameStart = index
                while index < bytes.count, bytes[index] != UInt8(ascii: "=") { index += 1 }
                guard index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\"") else { return fail("bad label") }
                let labelName = String(decoding: bytes[nameStart..<index], as: UTF8.self)
                index += 2
                var value: [UInt8] = []
                while true {
                    guard index < bytes.count else { return fail("unterminated label value") }
                    let byte = bytes[index]
                    index += 1
                    if byte == UInt8(ascii: "\"") { break }
                    if byte == UInt8(ascii: "\\"), index < bytes.count {
                        let escaped = bytes[index]
                        index += 1
                        value.append(escaped == UInt8(ascii: "n") ? UInt8(ascii: "\n") : escaped)
                    } else {
                        value.append(byte)
                    }
                }
                labels[labelName] = String(decoding: value, as: UTF8.self)
            }
        }
        let rest = String(decoding: bytes[index...], as: UTF8.self).split(separator: " ")
        guard let first = rest.first else { return fail("missing value") }
        let value: Double
        switch first {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let parsed = Double(first) else { return fail("bad value \"\(first)\"") }
            value = parsed
        }
        return ParsedSample(name: name, labels: labels, value: value)
    }
}
