import Foundation
import Testing
@testable import TCPTopServer

/// Log lines are one line each, whatever a message or a value holds: every
/// control character is escaped in both formats.
@Suite struct LogFormatTests {
    /// Every C0 control, DEL and the C1 controls.
    static let controls: [Unicode.Scalar] = (0x00...0x1f).map { Unicode.Scalar($0)! } + [Unicode.Scalar(0x7f)!]
        + (0x80...0x9f).map { Unicode.Scalar($0)! }

    @Test(arguments: [
        ("plain", "k=plain"),
        ("", #"k="""#),
        ("a b", #"k="a b""#),
        ("a=b", #"k="a=b""#),
        (#"say "hi""#, #"k="say \"hi\"""#),
        ("back\\slash", "k=back\\slash"),
        ("back\\ slash", #"k="back\\ slash""#),
        ("two\nlines", #"k="two\nlines""#),
        ("carriage\rreturn", #"k="carriage\rreturn""#),
        ("tab\there", #"k="tab\there""#),
        ("nul\u{0}byte", #"k="nul\u0000byte""#),
        ("esc\u{1b}[2J", #"k="esc\u001b[2J""#),
        ("del\u{7f}", #"k="del\u007f""#),
        ("c1\u{85}next", #"k="c1\u0085next""#),
        ("bell\u{7}", #"k="bell\u0007""#),
        ("naïve ☃", #"k="naïve ☃""#),
    ])
    func logfmtEscapes(value: String, line: String) {
        #expect(LineLogHandler.logfmt([("k", value)]) == line)
    }

    @Test func logfmtKeysStayBare() {
        #expect(LineLogHandler.logfmt([("a key=\"x\"\n", "v"), ("", "w")]) == "a_key__x__=v _=w")
    }

    @Test func everyControlCharacterIsEscapedInLogfmt() {
        for scalar in Self.controls {
            let line = LineLogHandler.logfmt([("msg", "a\(Character(scalar))b")])
            #expect(!line.unicodeScalars.contains(where: LineLogHandler.isControl), "U+\(String(scalar.value, radix: 16)) left raw")
            #expect(line.hasPrefix(#"msg="a\"#) && line.hasSuffix(#"b""#))
        }
    }

    @Test func everyControlCharacterIsEscapedInJSONAndItStillParses() throws {
        for scalar in Self.controls {
            let value = "a\(Character(scalar))b\"\\"
            let line = LineLogHandler.json([("msg", value), ("ts", "t")])
            #expect(!line.unicodeScalars.contains(where: LineLogHandler.isControl), "U+\(String(scalar.value, radix: 16)) left raw")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
            #expect(object == ["msg": value, "ts": "t"])
        }
    }

    @Test func jsonKeysAreSortedAndALaterFieldWins() {
        #expect(LineLogHandler.json([("ts", "1"), ("level", "info"), ("msg", "m"), ("level", "warn")])
                    == #"{"level":"warn","msg":"m","ts":"1"}"#)
        #expect(LineLogHandler.json([("k\n", "tab\t/slash")]) == #"{"k\n":"tab\t/slash"}"#)
    }

    @Test func escapesAreTheShortFormsWhereThereIsOne() {
        #expect(LineLogHandler.escaped("\\\"\n\r\t\u{8}\u{c}") == #"\\\"\n\r\t\u0008\u000c"#)
    }
}
