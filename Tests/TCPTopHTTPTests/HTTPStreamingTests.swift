import Dispatch
import Glibc
import Synchronization
import Testing
@testable import TCPTopHTTP

/// Streamed bodies over real sockets: written as produced, chunked on a
/// kept-alive connection, ended by the close otherwise, gzip streamed, HEAD
/// without producing, failures, and the concurrency limit over the write.
@Suite struct HTTPStreamingTests {
    /// 3,000 pieces of varied sizes (some far past the 64 KiB flush size).
    static let pieces: [[UInt8]] = (0..<3000).map { index in
        let line = "piece \(index) " + String(repeating: "x", count: index % 97) + "\n"
        return Array((index % 500 == 0 ? String(repeating: line, count: 3000) : line).utf8)
    }
    static let whole = pieces.flatMap { $0 }

    final class Counter: Sendable {
        let calls = Atomic<Int>(0)
    }

    private func makeServer(_ configure: (inout HTTPServer.Configuration) -> Void = { _ in },
                            counter: Counter = Counter(), routes: (inout HTTPRouter) -> Void = { _ in }) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configure(&configuration)
        var router = HTTPRouter()
        router.get("/") { _ in .text(200, "landing\n") }
        router.get("/stream") { _ in
            .stream(headers: ["Content-Type": "text/plain"]) { sink in
                counter.calls.add(1, ordering: .relaxed)
                for piece in Self.pieces { try sink(piece[...]) }
            }
        }
        router.get("/fails-at-once") { _ in .stream { _ in throw TestClient.Failure.closed } }
        router.get("/fails-midway") { _ in
            .stream { sink in
                for piece in Self.pieces.prefix(1000) { try sink(piece[...]) }
                throw TestClient.Failure.closed
            }
        }
        routes(&router)
        let server = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)], configuration: configuration)
        server.start(handler: router.handler)
        return server
    }

    @Test(arguments: [false, true])
    func keptAliveIsChunked(gzip: Bool) throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        let response = try client.get("/stream", headers: gzip ? "Accept-Encoding: gzip\r\n" : "")
        #expect(response.status == 200)
        #expect(response.headers["transfer-encoding"] == "chunked")
        #expect(response.headers["content-length"] == nil)
        #expect(response.headers["connection"] == nil)
        #expect(response.headers["content-encoding"] == (gzip ? "gzip" : nil))
        #expect((gzip ? gunzip(response.body) : response.body) == Self.whole)
        if gzip { #expect(response.body.count < Self.whole.count / 5) }
        // In step: the same connection answers again.
        #expect(try client.get("/").text == "landing\n")
    }

    @Test(arguments: [("HTTP/1.1", "Connection: close\r\n", false), ("HTTP/1.1", "Connection: close\r\n", true),
                      ("HTTP/1.0", "", false), ("HTTP/1.0", "Connection: keep-alive\r\n", true)])
    func otherwiseTheCloseEndsTheBody(version: String, connection: String, gzip: Bool) throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        client.send("GET /stream \(version)\r\nHost: t\r\n\(connection)\(gzip ? "Accept-Encoding: gzip\r\n" : "")\r\n")
        let response = try client.readResponse()
        #expect(response.status == 200)
        #expect(response.headers["transfer-encoding"] == nil)
        #expect(response.headers["content-length"] == nil)
        #expect(response.headers["connection"] == "close")
        #expect((gzip ? gunzip(response.body) : response.body) == Self.whole)
    }

    @Test func curlDecodesTheGzipStream() throws {
        let server = try makeServer()
        defer { server.stop() }
        let output = "/tmp/tcptop-stream-\(getpid()).txt"
        defer { unlink(output) }
        let command = "curl -sS --max-time 10 --compressed -o \(output) http://127.0.0.1:\(server.boundAddresses[0].port)/stream"
        #expect(system(command) == 0)
        let file = try #require(fopen(output, "rb"))
        defer { fclose(file) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { received += chunk[..<count] }
        #expect(received == Self.whole)
    }

    @Test func headNeverCallsTheProducer() throws {
        let counter = Counter()
        let server = try makeServer(counter: counter)
        defer { server.stop() }
        let client = try TestClient(host: "127.0.0.1", port: server.boundAddresses[0].port)
        client.send("HEAD /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        let head = try client.readResponse(bodyExpected: false)
        #expect(head.status == 200)
        #expect(head.headers["content-encoding"] == "gzip")
        // Had HEAD sent a body, this next response would not parse.
        #expect(try client.get("/").text == "landing\n")
        #expect(counter.calls.load(ordering: .relaxed) == 0)
        #expect(try client.get("/stream").body == Self.whole)
        #expect(counter.calls.load(ordering: .relaxed) == 1)
    }

    @Test func aProducerThatFailsBeforeSendingGets500AfterwardsTheConnectionIsCut() throws {
        let server = try makeServer()
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let early = try TestClient(host: "127.0.0.1", port: port)
        #expect(try early.get("/fails-at-once").status == 500)
        #expect(try early.get("/").status == 200)

        let midway = try TestClient(host: "127.0.0.1", port: port)
        midway.send("GET /fails-midway HTTP/1.1\r\nHost: t\r\n\r\n")
        // The head and part of the body came; the last chunk never does.
        #expect(throws: TestClient.Failure.self) { try midway.readResponse() }
    }

    @Test func theLimitCoversAResponseWhoseClientDoesNotRead() throws {
        let server = try makeServer({ $0.maxConcurrentRequests = 1; $0.writeTimeout = .seconds(1) }) { router in
            router.get("/huge") { _ in
                .stream { sink in
                    let piece = [UInt8](repeating: 0x61, count: 64 * 1024)
                    for _ in 0..<1024 { try sink(piece[...]) }  // 64 MiB, far past any socket buffer
                }
            }
        }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let reader = try TestClient(host: "127.0.0.1", port: port, receiveBuffer: 4096)
        reader.send("GET /huge HTTP/1.1\r\nHost: t\r\n\r\n")
        // Handed to the one worker, which stays blocked on the unread socket (64 MiB never fit its buffers).
        let handed = ContinuousClock.now + .seconds(5)
        while server.requestsInFlight < 1, ContinuousClock.now < handed { usleep(2_000) }
        #expect(server.requestsInFlight == 1)
        let started = ContinuousClock.now
        #expect(try TestClient(host: "127.0.0.1", port: port).get("/").status == 503, "the slow write holds the one worker")
        #expect(reader.waitUntilServerReleasedConnection(serverPort: port, timeout: 5), "the slow client was never cut")
        // Cut at the 1 s write deadline (loosely: /proc/net/tcp is slow to read while another test floods).
        let cutAfter = secondsSince(started)
        #expect(cutAfter >= 0.7 && cutAfter < 4, "cut after \(cutAfter) s")
        #expect(try TestClient(host: "127.0.0.1", port: port).get("/").status == 200, "the worker is free again")
    }
}
