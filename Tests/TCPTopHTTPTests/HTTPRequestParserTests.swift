import Testing
@testable import TCPTopHTTP

@Suite struct HTTPRequestParserTests {
    private func parse(_ text: String, maxHeadSize: Int = 8192) throws(HTTPRequestError) -> HTTPRequestParser.Result {
        try HTTPRequestParser.parse(Array(text.utf8)[...], maxHeadSize: maxHeadSize)
    }

    @Test func parsesRequestLineAndHeaders() throws {
        let text = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT-Encoding:  gzip \r\nX-Empty:\r\n\r\nNEXT"
        guard case .complete(let request, let headLength) = try parse(text) else {
            Issue.record("incomplete")
            return
        }
        #expect(request.method == "GET")
        #expect(request.target == "/metrics?x=1")
        #expect(request.path == "/metrics")
        #expect(request.query == "x=1")
        #expect(request.version == .http1_1)
        #expect(request.headers["accept-encoding"] == "gzip")
        #expect(request.headers["x-empty"] == "")
        #expect(headLength == text.utf8.count - 4)
    }

    @Test func waitsForTheRestOfTheHead() throws {
        #expect(try parse("") == .incomplete)
        #expect(try parse("GET / HTTP/1.1\r\nHost: a\r\n") == .incomplete)
    }

    /// The early refusal never refuses what could still become valid: every
    /// proper prefix of valid heads waits for more.
    @Test func everyPrefixOfAValidHeadWaits() throws {
        let heads = [
            "\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0.5\r\nX: \t\u{e9} v\r\n\r\n",
            "POST http://h:1/p HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            "M-S.E_A~RCH! * HTTP/1.9\r\nHost: a\r\n\r\n",
        ]
        for head in heads.map({ Array($0.utf8) }) {
            for end in 0..<head.count {
                #expect(try HTTPRequestParser.parse(head[..<end]) == .incomplete, "\(String(decoding: head[..<end], as: UTF8.self).debugDescription)")
            }
            guard case .complete = try HTTPRequestParser.parse(head[...]) else { Issue.record("not complete"); continue }
        }
    }

    @Test(arguments: [
        Case("\u{16}\u{03}", HTTPRequestError.malformedRequestLine),  // TLS record header
        Case("GE\u{00}", .malformedRequestLine), Case("GET  /", .malformedRequestLine), Case("GET /\t", .malformedRequestLine),
        Case("GET / HTTP/1.1 ", .malformedRequestLine), Case("GET / HTTP/1.10", .malformedRequestLine),
        Case("GET / HTTP/1.1\rX", .malformedRequestLine), Case("GET / HTTX", .malformedRequestLine),
        Case("GET / HTTP/1.1\r\nHost: a\r\n x", .obsoleteLineFolding),
        Case("GET / HTTP/1.1\r\nHost: \u{7f}", .malformedHeader), Case("GET / HTTP/1.1\r\nA: b\rc", .malformedHeader),
    ])
    func refusesAtOnceWhatCanNeverBeValid(_ test: Case<HTTPRequestError>) {
        let bytes = test.text.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }
        #expect(throws: test.expected) { try HTTPRequestParser.parse(bytes[...]) }
    }

    @Test func skipsLeadingEmptyLinesAndReadsHTTP10() throws {
        guard case .complete(let request, _) = try parse("\r\n\r\nGET / HTTP/1.0\r\n\r\n") else {
            Issue.record("incomplete")
            return
        }
        #expect(request.version == .http1_0)
        #expect(!request.wantsKeepAlive)
    }

    @Test func absoluteFormTargetRoutesByPath() throws {
        guard case .complete(let request, _) = try parse("GET http://h:1/metrics?a HTTP/1.1\r\nHost: h\r\n\r\n") else {
            Issue.record("incomplete")
            return
        }
        #expect(request.path == "/metrics")
    }

    @Test(arguments: [
        Case("GET / HTTP/1.1\nHost: a\n\n", HTTPRequestError.bareLineFeed),
        Case("GET / HTTP/1.1\r\nHost: a\n", .bareLineFeed),
        Case("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET /\u{0B} HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET / HTTX/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET / HTTP/1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET /é HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine),
        Case("GET / HTTP/2.0\r\nHost: a\r\n\r\n", .unsupportedVersion("HTTP/2.0")),
        Case("GET / HTTP/0.9\r\nHost: a\r\n\r\n", .unsupportedVersion("HTTP/0.9")),
        Case("GET / HTTP/1.1\r\nHost a\r\n\r\n", .malformedHeader),
        Case("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .malformedHeader),
        Case("GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", .malformedHeader),
        Case("GET / HTTP/1.1\r\nHost: a\u{01}b\r\n\r\n", .malformedHeader),
        Case("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", .malformedHeader),
        Case("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", .obsoleteLineFolding),
        Case("GET / HTTP/1.1\r\n\r\n", .missingOrRepeatedHost),
        Case("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .missingOrRepeatedHost),
        Case("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .invalidContentLength),
        Case("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .invalidContentLength),
        Case("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", .transferEncodingNotSupported),
    ])
    func rejectsMalformedHeads(_ test: Case<HTTPRequestError>) {
        #expect(throws: test.expected) { try parse(test.text) }
    }

    @Test func boundsTheHeadSize() {
        let bigHeader = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 200) + "\r\n\r\n"
        #expect(throws: HTTPRequestError.headTooLarge) { try parse(bigHeader, maxHeadSize: 100) }
        // Still incomplete but already past the limit: refused without waiting.
        #expect(throws: HTTPRequestError.headTooLarge) { try parse(String(bigHeader.dropLast(4)), maxHeadSize: 100) }
        #expect(throws: HTTPRequestError.requestLineTooLong) { try parse("GET /" + String(repeating: "a", count: 200), maxHeadSize: 100) }
        #expect(throws: HTTPRequestError.headTooLarge) { try parse(String(repeating: "\r\n", count: 100), maxHeadSize: 100) }
    }

    /// A valid head with a few random byte edits: the parser must answer every
    /// one (a crash fails the run) and never claim more bytes than it was given.
    @Test func survivesMutatedInput() {
        let valid = Array("GET /m?q HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n".utf8)
        let interesting = Array(" \t\r\n:/0\u{0}\u{7F}".utf8) + [0xC3, 0xFF]
        var generator = SplitMix64(seed: 42)
        var outcomes = (complete: 0, failed: 0)
        for _ in 0..<5000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[index] = interesting.randomElement(using: &generator)!
                case 1: bytes.insert(interesting.randomElement(using: &generator)!, at: index)
                default: bytes.remove(at: index)
                }
            }
            switch try? HTTPRequestParser.parse(bytes[...]) {
            case .complete(let request, let headLength)?:
                #expect(headLength > 0 && headLength <= bytes.count)
                #expect(!request.method.isEmpty && !request.target.isEmpty)
                outcomes.complete += 1
            case .incomplete?: break
            case nil: outcomes.failed += 1
            }
        }
        // Both branches really ran.
        #expect(outcomes.complete > 100 && outcomes.failed > 100)
    }

    @Test func errorsMapToStatuses() {
        #expect(HTTPRequestError.malformedHeader.status == 400)
        #expect(HTTPRequestError.unsupportedVersion("HTTP/2.0").status == 505)
        #expect(HTTPRequestError.headTooLarge.status == 431)
        #expect(HTTPRequestError.transferEncodingNotSupported.status == 501)
    }

    @Test func readsContentLength() throws {
        guard case .complete(let request, _) = try parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n") else {
            Issue.record("incomplete")
            return
        }
        #expect(request.contentLength == 12)
    }

    @Test(arguments: [
        (["gzip"], true),
        (["deflate, gzip;q=0.5"], true),
        (["GZIP"], true),
        (["x-gzip"], true),
        (["gzip;q=0"], false),
        (["gzip; q=0.000"], false),
        (["*"], true),
        (["*;q=0"], false),
        (["*, gzip;q=0"], false),
        (["identity"], false),
        (["br", "gzip"], true),
        (["gzip;q=nonsense"], false),
        ([], false),
    ])
    func acceptEncoding(values: [String], acceptsGzip: Bool) {
        #expect(HTTPContentCoding.acceptsGzip(values) == acceptsGzip)
    }

    @Test(arguments: [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "close", false),
        ("HTTP/1.1", "Keep-Alive, Close", false),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "keep-alive", true),
    ])
    func keepAlive(version: String, connection: String, expected: Bool) throws {
        let header = connection.isEmpty ? "" : "Connection: \(connection)\r\n"
        guard case .complete(let request, _) = try parse("GET / \(version)\r\nHost: a\r\n\(header)\r\n") else {
            Issue.record("incomplete")
            return
        }
        #expect(request.wantsKeepAlive == expected)
    }

    @Test func listenAddressDescription() {
        #expect(ListenAddress(host: nil, port: 9435).description == ":9435")
        #expect(ListenAddress(host: "127.0.0.1", port: 80).description == "127.0.0.1:80")
        #expect(ListenAddress(host: "::1", port: 9435).description == "[::1]:9435")
    }

    @Test func httpDateIsIMFFixdate() {
        #expect(HTTPResponseEncoder.httpDate(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }
}

/// A tiny seeded generator, so random tests repeat exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
