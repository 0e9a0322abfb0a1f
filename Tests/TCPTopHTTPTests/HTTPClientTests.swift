import Glibc
import Testing
@testable import TCPTopHTTP

/// The client against the real HTTPServer and, for replies that server
/// never sends, a canned-reply listener; all over loopback sockets.
@Suite struct HTTPClientTests {
    static let metricsText = String(repeating: "tcptop_sent_bytes_total{pid=\"1\"} 12345\n", count: 200)

    private func makeServer(host: String? = "127.0.0.1") throws -> HTTPServer {
        var router = HTTPRouter()
        router.get("/") { _ in .text(200, "landing\n") }
        router.get("/metrics") { _ in .text(200, Self.metricsText) }
        router.get("/big") { _ in HTTPResponse(status: 200, body: [UInt8](repeating: 7, count: 2 << 20)) }
        router.get("/zeros") { _ in HTTPResponse(status: 200, body: [UInt8](repeating: 0, count: 8 << 20)) }
        let server = try HTTPServer(listenAddresses: [ListenAddress(host: host, port: 0)])
        server.start(handler: router.handler)
        return server
    }

    private func client(timeout: Duration = .seconds(5), _ configure: (inout HTTPClient.Options) -> Void = { _ in }) -> HTTPClient {
        var options = HTTPClient.Options()
        options.timeout = timeout
        configure(&options)
        return HTTPClient(options: options)
    }

    @Test func severalRequestsOnOneKeptAliveConnection() throws {
        let server = try makeServer()
        defer { server.stop() }
        let connection = try client().connect(host: "127.0.0.1", port: server.boundAddresses[0].port)
        let metrics = try connection.request("GET", "/metrics")
        #expect(metrics.status == 200 && metrics.statusLine == "HTTP/1.1 200 OK")
        #expect(metrics.text == Self.metricsText)
        #expect(metrics.headers["CONTENT-length"] == String(Self.metricsText.utf8.count))
        #expect(metrics.keepsConnectionOpen && connection.isReusable)
        let missing = try connection.request("GET", "/nope")
        #expect(missing.status == 404 && missing.keepsConnectionOpen)
        let last = try connection.request("GET", "/", headers: ["Connection": "close"])
        #expect(last.text == "landing\n")
        #expect(!last.keepsConnectionOpen && !connection.isReusable)
        #expect(connection.isClosedByPeer(within: .seconds(5)))
    }

    @Test func headHasNoBodyAndTheNextReplyStillParses() throws {
        let server = try makeServer()
        defer { server.stop() }
        let connection = try client().connect(host: "127.0.0.1", port: server.boundAddresses[0].port)
        let head = try connection.request("HEAD", "/metrics")
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(head.headers["Content-Length"] == String(Self.metricsText.utf8.count))
        #expect(try connection.request("GET", "/").text == "landing\n")
    }

    @Test func gzipIsAskedForAndInflated() throws {
        let server = try makeServer()
        defer { server.stop() }
        let url = HTTPURL(host: "127.0.0.1", port: server.boundAddresses[0].port, path: "/metrics")
        let inflated = try client { $0.acceptGzip = true }.get(url)
        #expect(inflated.headers["Content-Encoding"] == "gzip")
        #expect(inflated.text == Self.metricsText)
        // Not asked for by the options: the body comes as sent.
        let raw = try client().get(url, headers: ["Accept-Encoding": "gzip"])
        #expect(raw.headers["Content-Encoding"] == "gzip")
        #expect(raw.body.starts(with: [0x1f, 0x8b]) && raw.body.count < Self.metricsText.utf8.count / 5)
        #expect(try HTTPGunzip.inflate(raw.body, maxBytes: 1 << 20) == Array(Self.metricsText.utf8))
    }

    @Test func getByURLOverIPv4IPv6AndAName() throws {
        let server = try makeServer(host: nil)
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        #expect(try client().get(url: "http://127.0.0.1:\(port)/metrics").text == Self.metricsText)
        #expect(try client().get(url: "http://[::1]:\(port)").text == "landing\n")
        #expect(try client().get(url: "localhost:\(port)/").text == "landing\n")
    }

    @Test func theRequestAsSent() throws {
        let canned = try CannedReplyServer(replies: [Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)])
        defer { canned.stop() }
        let reply = try client { $0.acceptGzip = true }.get(url: "http://127.0.0.1:\(canned.port)/a?b=c", headers: ["User-Agent": "t"])
        #expect(reply.status == 204 && reply.body.isEmpty)
        #expect(canned.requests.map { String(decoding: $0, as: UTF8.self) } == [
            "GET /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:\(canned.port)\r\nAccept-Encoding: gzip\r\nUser-Agent: t\r\nConnection: close\r\n\r\n",
        ])
    }

    @Test func chunkedNoBodyStatusesAndInterimRepliesOnOneConnection() throws {
        let replies = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]
        let canned = try CannedReplyServer(replies: replies.map { Array($0.utf8) }, then: .hold)
        defer { canned.stop() }
        let connection = try client().connect(host: "127.0.0.1", port: canned.port)
        #expect(try connection.request("GET", "/1").text == "hello world")
        #expect(try connection.request("GET", "/2").body.isEmpty)
        #expect(try connection.request("GET", "/3").body.isEmpty)
        let last = try connection.request("GET", "/4")
        #expect(last.status == 200 && last.text == "ok" && connection.isReusable)
        #expect(canned.requests.count == 4)
    }

    @Test func aReplyWithoutLengthEndsAtTheClose() throws {
        let canned = try CannedReplyServer(replies: [Array("HTTP/1.0 200 OK\r\nX: y\r\n\r\nto the end".utf8)])
        defer { canned.stop() }
        let connection = try client().connect(host: "127.0.0.1", port: canned.port)
        let reply = try connection.request("GET", "/")
        #expect(reply.text == "to the end" && reply.version == .http1_0 && reply.headers["x"] == "y")
        #expect(!reply.keepsConnectionOpen && !connection.isReusable)
    }

    @Test(arguments: [
        Case("", "connection closed before a reply"),
        Case("SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP reply: \"SSH-2.0-OpenSSH_9.6\""),
        Case("HTTP/1.1 200 OK\r\nContent-Len", "connection closed in the middle of the reply head"),
        Case("HTTP/1.1 200 OK\r\nBad header\r\n\r\n", "malformed header line \"Bad header\""),
        Case("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "reply cut short (5 of 9 body bytes)"),
        Case("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length \"-1\""),
        Case("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "bad Content-Length \"5,6\""),
        Case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size line \"zz\""),
        Case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
             "bad chunked body: a chunk does not end with CRLF"),
        Case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "connection closed in the middle of the chunked body"),
        Case("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx", "reply body is not valid gzip (zlib status -3)"),
        Case("HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx", "unsupported Content-Encoding \"br\""),
    ])
    func badRepliesAreOneLineErrors(_ test: Case<String>) throws {
        let canned = try CannedReplyServer(replies: [Array(test.text.utf8)])
        defer { canned.stop() }
        #expect {
            try client { $0.acceptGzip = true }.get(url: "http://127.0.0.1:\(canned.port)/")
        } throws: { error in
            "\(error)" == test.expected
        }
    }

    @Test func bodiesAndHeadsPastTheLimitsAreRefused() throws {
        let server = try makeServer()
        defer { server.stop() }
        let big = HTTPURL(host: "127.0.0.1", port: server.boundAddresses[0].port, path: "/big")
        #expect(try client().get(big).body.count == 2 << 20)
        #expect(throws: HTTPClientError(.tooLarge, "reply body larger than the limit of 1 MiB")) {
            try client { $0.maxBodyBytes = 1 << 20 }.get(big)
        }
        let zeros = HTTPURL(host: "127.0.0.1", port: big.port, path: "/zeros")
        #expect(throws: HTTPClientError(.tooLarge, "reply body inflates to more than the limit of 1 MiB")) {
            try client { $0.maxBodyBytes = 1 << 20; $0.acceptGzip = true }.get(zeros)
        }

        let chunk = "10000\r\n" + String(repeating: "a", count: 1 << 16) + "\r\n"
        let oversized = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: chunk, count: 3) + "0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n" + String(repeating: "b", count: 200 << 10),
        ]
        for reply in oversized {
            let canned = try CannedReplyServer(replies: [Array(reply.utf8)])
            defer { canned.stop() }
            #expect(throws: HTTPClientError(.tooLarge, "reply body larger than the limit of 100 KiB")) {
                try client { $0.maxBodyBytes = 100 << 10 }.get(url: "http://127.0.0.1:\(canned.port)/")
            }
        }
        let longHead = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "h", count: 70_000) + "\r\n\r\n"
        let canned = try CannedReplyServer(replies: [Array(longHead.utf8)])
        defer { canned.stop() }
        #expect(throws: HTTPClientError(.tooLarge, "reply head larger than the limit of 64 KiB")) {
            try client().get(url: "http://127.0.0.1:\(canned.port)/")
        }
    }

    @Test func refusedAndUnresolvableAreOneLine() throws {
        let closed = try CannedReplyServer(replies: [])
        let port = closed.port
        closed.stop()  // now surely nobody listens there
        #expect(throws: HTTPClientError(.connect(errno: ECONNREFUSED), "connect 127.0.0.1:\(port): Connection refused")) {
            try client().get(url: "http://127.0.0.1:\(port)/metrics")
        }
        #expect {
            try client().connect(host: "no-such-host.invalid", port: 80)
        } throws: { error in
            (error as? HTTPClientError)?.kind == .resolve && "\(error)".hasPrefix("resolve no-such-host.invalid: ")
        }
    }

    /// A listener that never accepts (the kernel completes the handshake),
    /// and one that accepts and reads but never writes.
    @Test(arguments: [false, true])
    func aServerThatNeverAnswersTimesOut(accepting: Bool) throws {
        let silent = try CannedReplyServer(replies: [], then: .hold, accepting: accepting)
        defer { silent.stop() }
        let started = ContinuousClock.now
        #expect(throws: HTTPClientError(.timedOut, "timed out after 0.3 s reading the reply")) {
            try client(timeout: .milliseconds(300)).get(url: "http://127.0.0.1:\(silent.port)/")
        }
        let elapsed = started.duration(to: .now)
        #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(3), "\(elapsed)")
    }

    /// With its accept queue full, a listener drops new SYNs: connect itself hangs.
    @Test func aConnectThatHangsTimesOut() throws {
        let full = try CannedReplyServer(replies: [], accepting: false, backlog: 0)
        defer { full.stop() }
        var fillers: [HTTPClientConnection] = []
        var timedOut: HTTPClientError?
        let started = ContinuousClock.now
        // The queue holds backlog + 1; a few more, to be sure.
        for _ in 0..<4 where timedOut == nil {
            do {
                fillers.append(try client(timeout: .milliseconds(300)).connect(host: "127.0.0.1", port: full.port))
            } catch {
                timedOut = error
            }
        }
        #expect(timedOut == HTTPClientError(.timedOut, "timed out after 0.3 s connecting to 127.0.0.1:\(full.port)"))
        #expect(started.duration(to: .now) < .seconds(3))
    }

    @Test func aStopRequestEndsTheWaitAtOnce() throws {
        let silent = try CannedReplyServer(replies: [], then: .hold)
        defer { silent.stop() }
        let started = ContinuousClock.now
        let stopping = client(timeout: .seconds(10)) { $0.interrupted = { started.duration(to: .now) > .milliseconds(200) } }
        #expect(throws: HTTPClientError(.interrupted, "interrupted while reading the reply")) {
            try stopping.get(url: "http://127.0.0.1:\(silent.port)/")
        }
        #expect(started.duration(to: .now) < .seconds(1))
    }

    @Test func requestsThatWouldSmuggleLinesAreRefused() throws {
        let canned = try CannedReplyServer(replies: [], then: .hold)
        defer { canned.stop() }
        let connection = try client().connect(host: "127.0.0.1", port: canned.port)
        for (path, headers) in [("/a\r\nb", HTTPHeaders()), ("/", ["X": "1\r\nInjected: yes"]), ("/", ["Bad Name": "1"])] {
            #expect {
                try connection.request("GET", path, headers: headers)
            } throws: { error in
                (error as? HTTPClientError)?.kind == .badRequest && !"\(error)".contains("\n") && !"\(error)".contains("\r")
            }
        }
        #expect(canned.requests.isEmpty)
    }

    @Test(arguments: [
        ("http://127.0.0.1:9435/metrics", HTTPURL(host: "127.0.0.1", port: 9435, path: "/metrics")),
        ("db1", HTTPURL(host: "db1", port: 80, path: "/")),
        ("HTTP://db1:8080", HTTPURL(host: "db1", port: 8080, path: "/")),
        ("http://[::1]:8080/x?a=b", HTTPURL(host: "::1", port: 8080, path: "/x?a=b")),
        ("[fe80::1%eth0]", HTTPURL(host: "fe80::1%eth0", port: 80, path: "/")),
        ("https://db1/metrics", HTTPURL(host: "db1", port: 443, path: "/metrics", https: true)),
        ("HTTPS://127.0.0.1:9435", HTTPURL(host: "127.0.0.1", port: 9435, path: "/", https: true)),
    ])
    func urls(text: String, url: HTTPURL) throws {
        #expect(try HTTPURL(parsing: text) == url)
    }

    @Test(arguments: [
        Case("ftp://h", "\"ftp://h\": only http:// and https:// URLs are supported"),
        Case("http://", "\"http://\": no host"),
        Case("http://[::1", "\"http://[::1\": missing \"]\" after the IPv6 address"),
        Case("http://[::1]x", "\"http://[::1]x\": unexpected text after \"]\""),
        Case("http://h:0/", "\"http://h:0/\": invalid port \"0\""),
        Case("http://h:x", "\"http://h:x\": invalid port \"x\""),
        Case("http://h/a b", "\"http://h/a b\": the path has a space or a control character"),
        Case("http://a\rb/", "\"http://a.b/\": the host must be a name or an IP address"),
    ])
    func badURLs(_ test: Case<String>) {
        #expect(throws: HTTPClientError(.badURL, test.expected)) { try HTTPURL(parsing: test.text) }
    }

    @Test func urlText() {
        let url = HTTPURL(host: "::1", port: 9435, path: "/metrics")
        #expect(url.description == "http://[::1]:9435/metrics" && url.authority == "[::1]:9435")
        #expect(HTTPClientSocket.secondsText(.seconds(5)) == "5 s" && HTTPClientSocket.secondsText(.milliseconds(250)) == "0.25 s")
    }
}
