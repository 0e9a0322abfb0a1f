import Testing
import TCPTopCore

@Suite struct ExpositionTests {
    @Test func writesGoldenText() {
        var writer = ExpositionWriter()
        writer.family(name: "demo_bytes_total", help: "Bytes, with a \\ backslash\nand a newline.", type: .counter)
        writer.sample(name: "demo_bytes_total", labels: [("path", "C:\\dir"), ("quote", "say \"hi\"\n")], value: UInt64(0))
        writer.sample(
            name: "demo_bytes_total",
            preformattedLabels: formattedLabels([("comm", escapedLabelValue([0x63, 0xFF]))]),
            value: UInt64.max)
        writer.family(name: "demo_ratio", help: "A gauge.", type: .gauge)
        for value in [1234567.0, -3.0, 0.25, 0.0, -0.0, .infinity, -.infinity, .nan, 1e300, 1e-7] {
            writer.sample(name: "demo_ratio", value: value)
        }
        let expected = """
            # HELP demo_bytes_total Bytes, with a \\\\ backslash\\nand a newline.
            # TYPE demo_bytes_total counter
            demo_bytes_total{path="C:\\\\dir",quote="say \\"hi\\"\\n"} 0
            demo_bytes_total{comm="c\u{FFFD}"} 18446744073709551615
            # HELP demo_ratio A gauge.
            # TYPE demo_ratio gauge
            demo_ratio 1234567
            demo_ratio -3
            demo_ratio 0.25
            demo_ratio 0
            demo_ratio 0
            demo_ratio +Inf
            demo_ratio -Inf
            demo_ratio NaN
            demo_ratio 1e+300
            demo_ratio 1e-07

            """
        #expect(writer.text == expected)
    }

    @Test func formatsDecimalsLikeTheStandardLibrary() {
        var generator = SplitMix64(state: 1)
        var values: [UInt64] = [0, 9, 10, 99, 100, UInt64.max, UInt64.max - 1]
        var power: UInt64 = 1
        while power <= UInt64.max / 10 {
            power *= 10
            values += [power - 1, power, power + 1]
        }
        values += (0..<1000).map { _ in generator.next() >> (generator.next() % 64) }
        for value in values {
            var writer = ExpositionWriter()
            writer.appendDecimal(value)
            #expect(writer.text == String(value))
        }
    }

    @Test func samplesWithoutLabelsHaveNoBraces() {
        var writer = ExpositionWriter()
        writer.sample(name: "up", value: UInt64(1))
        writer.sample(name: "up", preformattedLabels: [], value: 2)
        #expect(writer.text == "up 1\nup 2\n")
    }
}

@Suite struct LabelEscapingTests {
    @Test(arguments: [
        ("plain", "plain"),
        ("a\"b", "a\\\"b"),
        ("a\\b", "a\\\\b"),
        ("line\nbreak", "line\\nbreak"),
        ("\\\"\n", "\\\\\\\"\\n"),
        ("café", "café"),
    ])
    func escapesText(raw: String, escaped: String) {
        #expect(escapedLabelValue(raw) == Array(escaped.utf8))
        #expect(escapedLabelValue(Array(raw.utf8)) == Array(escaped.utf8))
    }

    @Test(arguments: [
        ([0xFF] as [UInt8], "\u{FFFD}"),
        ([0x61, 0xC3], "a\u{FFFD}"),
        ([0xC3, 0x61], "\u{FFFD}a"),
        ([0xC3, 0xA9], "é"),
        ([0xE2, 0x82], "\u{FFFD}"),
        ([0xED, 0xA0, 0x80], "\u{FFFD}\u{FFFD}\u{FFFD}"),
        ([0x22, 0xFF, 0x5C], "\\\"\u{FFFD}\\\\"),
    ])
    func replacesInvalidUTF8(raw: [UInt8], escaped: String) {
        #expect(escapedLabelValue(raw) == Array(escaped.utf8))
    }

    /// Any comm bytes give valid UTF-8 with no bare quote or newline, and
    /// unescaping gives back the decoded text.
    @Test func arbitraryBytesGiveValidEscapedText() throws {
        var generator = SplitMix64(state: 7)
        for _ in 0..<2000 {
            let raw = (0..<Int(generator.next() % 16)).map { _ in UInt8(1 + generator.next() % 255) }
            let escaped = escapedLabelValue(raw)
            let text = try #require(String(validating: escaped, as: UTF8.self))
            #expect(!text.contains("\n"))
            #expect(unescape(text) == String(decoding: raw, as: UTF8.self))
        }
    }

    private func unescape(_ text: String) -> String? {
        // Scalars, not Characters: a backslash followed by a combining mark is one Character.
        var result = String.UnicodeScalarView()
        var iterator = text.unicodeScalars.makeIterator()
        while let character = iterator.next() {
            guard character == "\\" else {
                if character == "\"" { return nil }  // a bare quote would end the value
                result.append(character)
                continue
            }
            switch iterator.next() {
            case "\\": result.append("\\")
            case "\"": result.append("\"")
            case "n": result.append("\n")
            default: return nil
            }
        }
        return String(result)
    }
}
