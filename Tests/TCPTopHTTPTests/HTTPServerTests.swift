import CTCPTop
import Dispatch
import Glibc
import Testing
@testable import TCPTopHTTP

/// End-to-end tests over real loopback sockets, each on its own port 0 server.
@Suite struct HTTPServerTests {
    static let metricsText = String(repeating: "tcptop_sent_bytes_total{pid=\"1\"} 12345\n", count: 200)

    /// A server on `host` port 0 with the exporter's shape of routes.
    private func makeServer(host: String? = "127.0.0.1", configure: (inout HTTPServer.Configuration) -> Void = { _ in },
                            extraRoutes: (inout HTTPRouter) -> Void = { _ in }) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configure(&configuration)
        var router = HTTPRouter()
        router.get("/") { _ in .text(200, "landing\n") }
        router.get("/metrics") { _ in .text(200, Self.metricsText) }
        extraRoutes(&router)
        let server = try HTTPServer(listenAddresses: [ListenAddress(host: host, port: 0)], configuration: configuration)
        server.start(handler: router.handler)
        return server
    }

    @Test(arguments: ["127.0.0.1", "::1"])
    func getAndHead(host: String) throws {
        let server = try makeServer(host: host)
        defer { server.stop() }
        let port = try #require(server.boundAddresses.first).port
        #expect(port != 0)
        let client = try TestClient(host: host, port: port)
        let get = try client.get("/metrics")
        #expect(get.status == 200)
        #expect(get.text == Self.metricsText)
        #expect(get.headers["content-length"] == String(Self.metricsText.utf8.count))
        #expect(get.headers["date"]?.hasSuffix(" GMT") == true)

        client.send("HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        let head = try client.readResponse(bodyExpected: false)
        #expect(head.status == 200)
        #expect(head.headers["content-length"] == get.headers["content-length"])
        // Had HEAD sent a body, this next response would not parse.
        #expect(try client.get("/").text == "landing\n")
    }

    @Test func allAddressesListensOnIPv4AndIPv6() throws {
        let server = try makeServer(host: nil)
        defer { server.stop() }
        let port = try #require(server.boundAddresses.first).port
        #expect(try TestClient(host: "127.0.0.1", port: port).get("/").status == 200)
        #expect(try TestClient(host: "::1", port: port).get("/").status == 200)
    }

    @Test func localhostBindsLoopback() throws {
        let server = try makeServer(host: "localhost")
        defer { server.stop() }
        #expect(!server.boundAddresses.isEmpty)
        for address in server.boundAddresses {
            #expect(["127.0.0.1", "::1"].contains(address.host), "\(address)")
            #expect(try TestClient(host: address.host!, port: address.port).get("/").status == 200)
        }
    }

    @Test func routingStatuses() throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        #expect(try client.get("/metrics?debug=1").status == 200)
        #expect(try client.get("/nope").status == 404)
        client.send("DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        let deleted = try client.readResponse()
        #expect(deleted.status == 405)
        #expect(deleted.headers["allow"] == "GET, HEAD")
        // A small body is read and dropped: the connection stays usable.
        client.send("POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        #expect(try client.readResponse().status == 405)
        // Two pipelined requests in one write get two answers.
        client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try client.readResponse().status == 200)
        #expect(try client.readResponse().status == 404)
    }

    @Test(arguments: [
        Case("GET / HTTP/1.1\r\nHost t\r\n\r\n", 400),
        Case("GET / HTTP/1.1\nHost: t\n\n", 400),
        Case("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}\u{00}\u{01}\u{fc}\u{03}\u{03}\r\n\r\n", 400),  // a TLS hello
        Case("GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        Case("GET / HTTP/1.1\r\nHost: t\r\nX: \(String(repeating: "a", count: 9000))\r\n\r\n", 431),
        Case("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        Case("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n", 413),
    ])
    func badRequestsGetAnErrorAndAClose(_ test: Case<Int>) throws {
        let (request, status) = (test.text, test.expected)
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        client.send(request)
        let response = try client.readResponse()
        #expect(response.status == status)
        #expect(response.headers["connection"] == "close")
        #expect(client.isClosedByServer())
    }

    @Test func keepAliveAndConnectionClose() throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        let first = try client.get("/")
        #expect(first.headers["connection"] == nil)
        #expect(try client.get("/metrics").status == 200)
        let last = try client.get("/", headers: "Connection: close\r\n")
        #expect(last.status == 200)
        #expect(last.headers["connection"] == "close")
        #expect(client.isClosedByServer())
    }

    @Test func gzipWhenAcceptedAndNotWhenRefused() throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        let zipped = try client.get("/metrics", headers: "Accept-Encoding: deflate, gzip;q=0.8\r\n")
        #expect(zipped.headers["content-encoding"] == "gzip")
        #expect(zipped.headers["vary"] == "Accept-Encoding")
        #expect(zipped.body.count < Self.metricsText.utf8.count / 5)
        #expect(gunzip(zipped.body).map { String(decoding: $0, as: UTF8.self) } == Self.metricsText)

        let refused = try client.get("/metrics", headers: "Accept-Encoding: gzip;q=0\r\n")
        #expect(refused.headers["content-encoding"] == nil)
        #expect(refused.headers["vary"] == "Accept-Encoding")
        #expect(refused.text == Self.metricsText)

        client.send("HEAD /metrics HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        let head = try client.readResponse(bodyExpected: false)
        #expect(head.headers["content-length"] == String(zipped.body.count))
    }

    @Test func slowClientDoesNotBlockOthersAndIsCutOff() throws {
        let server = try makeServer { $0.headReadTimeout = .milliseconds(500) }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let slow = try TestClient(host: "127.0.0.1", port: port)
        slow.send("GET / HTTP/1.1\r\nHo")

        let started = ContinuousClock.now
        #expect(try TestClient(host: "127.0.0.1", port: port).get("/").status == 200)
        #expect(started.duration(to: .now) < .milliseconds(400))

        let timedOut = try slow.readResponse()
        #expect(timedOut.status == 408)
        #expect(slow.isClosedByServer())
        let elapsed = started.duration(to: .now)
        #expect(elapsed >= .milliseconds(400) && elapsed < .seconds(3))
    }

    @Test func aClientThatStopsReadingIsCutOffAfterTheWriteTimeout() throws {
        let bodySize = 32 << 20
        let server = try makeServer(configure: { $0.writeTimeout = .milliseconds(300) }) { router in
            router.get("/huge") { _ in HTTPResponse(status: 200, body: [UInt8](repeating: 0, count: bodySize)) }
        }
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port, receiveBuffer: 4096)
        client.send("GET /huge HTTP/1.1\r\nHost: t\r\n\r\n")
        // Not reading: the server's send blocks until its deadline, then it closes the connection.
        let started = ContinuousClock.now
        #expect(client.waitUntilServerReleasedConnection(serverPort: server.boundAddresses[0].port, timeout: 5),
                "the server did not let go of the connection within 5 s")
        #expect(started.duration(to: .now) >= .milliseconds(250))
        var received = 0
        while let count = try? client.readSome(), count > 0 { received += count }
        #expect(received > 0 && received < bodySize)
    }

    @Test func requestsPastTheCapGet503() throws {
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let server = try makeServer(configure: { $0.maxConcurrentRequests = 1 }) { router in
            router.get("/slow") { _ in
                entered.signal()
                _ = release.wait(timeout: .now() + 10)  // bounded even when the test fails before it signals
                return .text(200, "finally\n")
            }
        }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let slowClient = try TestClient(host: "127.0.0.1", port: port)
        slowClient.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(entered.wait(timeout: .now() + 5) == .success)

        let busy = try TestClient(host: "127.0.0.1", port: port).get("/")
        #expect(busy.status == 503)
        release.signal()
        #expect(try slowClient.readResponse().text == "finally\n")
    }

    @Test func aNewConnectionAtTheCapTakesTheIdleOnesPlace() throws {
        let server = try makeServer { $0.maxConnections = 1 }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let holder = try TestClient(host: "127.0.0.1", port: port)
        #expect(try holder.get("/").status == 200)  // Now surely accepted.
        // And idle once the worker handed it back (the response can reach the
        // client first: under load, the newcomer then found it busy and got 503).
        let deadline = ContinuousClock.now + .seconds(5)
        while server.requestsInFlight > 0, ContinuousClock.now < deadline { usleep(1_000) }

        // The idle kept-alive connection is closed to make room (it was 503 for the newcomer before).
        let extra = try TestClient(host: "127.0.0.1", port: port)
        #expect(try extra.get("/").status == 200)
        #expect(holder.isClosedByServer())
    }

    @Test func bindingAnAddressInUseFailsWithOneLine() throws {
        let first = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)])
        defer { first.stop() }
        let port = first.boundAddresses[0].port
        #expect {
            try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: port)])
        } throws: { error in
            "\(error)" == "listen 127.0.0.1:\(port): Address already in use"
        }
        // Failing on the second address must not leave the first bound.
        let free = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)])
        let freePort = free.boundAddresses[0].port
        free.stop()
        #expect(throws: HTTPBindError.self) {
            try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: freePort),
                                             ListenAddress(host: "127.0.0.1", port: port)])
        }
        let again = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: freePort)])
        again.stop()
    }

    @Test func unresolvableHostFailsWithOneLine() {
        #expect {
            try HTTPServer(listenAddresses: [ListenAddress(host: "no-such-host.invalid", port: 1)])
        } throws: { error in
            "\(error)".hasPrefix("listen no-such-host.invalid:1: ")
        }
    }

    @Test func stopEndsServing() throws {
        let server = try makeServer()
        let port = server.boundAddresses[0].port
        let idle = try TestClient(host: "127.0.0.1", port: port)
        #expect(try idle.get("/").status == 200)

        let started = ContinuousClock.now
        server.stop()
        #expect(started.duration(to: .now) < .seconds(1))
        #expect(idle.isClosedByServer())
        #expect(throws: TestClient.Failure.self) { try TestClient(host: "127.0.0.1", port: port) }
    }

    @Test func stopWaitsForARequestInFlight() throws {
        let entered = DispatchSemaphore(value: 0)
        let server = try makeServer(extraRoutes: { router in
            router.get("/slow") { _ in
                entered.signal()
                usleep(300_000)
                return .text(200, "done\n")
            }
        })
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        client.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(entered.wait(timeout: .now() + 5) == .success)
        server.stop(gracePeriod: .seconds(5))
        let response = try client.readResponse()
        #expect(response.text == "done\n")
        #expect(response.headers["connection"] == "close")
    }
}
