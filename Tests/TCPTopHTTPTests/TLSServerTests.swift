import Foundation
import Glibc
import Testing
@testable import TCPTopHTTP

/// TLS on the event loop, checked with real tools (curl, openssl s_client)
/// and certificates made at test time: both versions with exact bytes, the
/// exporter-toolkit settings, the five client auth types and
/// client_allowed_sans, rotation, deadlines, plain HTTP sent to the port.
@Suite(.serialized) struct TLSServerTests {
    static let pki: Result<TestPKI, ToolError> = Result { try TestPKI() }.mapError { ToolError(description: "\($0)") }
    static let body = String(repeating: "tcptop_sent_bytes_total{pid=\"1\",comm=\"x\"} 123456\n", count: 400)

    private func settings(_ change: (inout TLSSettings) -> Void = { _ in }) throws -> TLSSettings {
        let pki = try Self.pki.get()
        var settings = TLSSettings(certFile: pki.path("server.crt"), keyFile: pki.path("server.key"))
        change(&settings)
        return settings
    }

    private func server(_ security: @escaping @Sendable () -> HTTPServer.Security,
                        configure: (inout HTTPServer.Configuration) -> Void = { _ in }) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configuration.security = security
        configure(&configuration)
        var router = HTTPRouter()
        router.get("/metrics") { _ in .text(200, Self.body) }
        let server = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)], configuration: configuration)
        server.start(handler: router.handler)
        return server
    }

    private func server(_ settings: TLSSettings) throws -> HTTPServer {
        let context = try TLSServerContext(settings)
        return try server { .tls(context) }
    }

    /// curl's exit status, the HTTP status and the body; `-v` lines in `log`.
    private func curl(_ port: UInt16, _ arguments: [String], path: String = "/metrics", scheme: String = "https")
        throws -> (exit: Int32, status: Int, body: String, log: String)
    {
        let pki = try Self.pki.get()
        let result = runTool("/usr/bin/curl", ["-sS", "-v", "--max-time", "10", "--cacert", pki.path("ca.crt"), "-w", "\n%{http_code}"]
                                 + arguments + ["\(scheme)://127.0.0.1:\(port)\(path)"])
        guard let newline = result.stdout.lastIndex(of: "\n") else { return (result.status, 0, "", result.stderr) }
        let status = Int(result.stdout[result.stdout.index(after: newline)...]) ?? 0
        return (result.status, status, String(result.stdout[..<newline]), result.stderr)
    }

    @Test(arguments: [(["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")])
    func curlGetsExactBytesOverEachVersion(flags: [String], version: String) throws {
        let server = try server(try settings())
        defer { server.stop() }
        let reply = try curl(server.boundAddresses[0].port, flags)
        #expect(reply.exit == 0, "\(reply.log)")
        #expect(reply.status == 200)
        #expect(reply.body == Self.body)
        #expect(reply.log.contains("SSL connection using \(version)"), "\(reply.log)")
    }

    @Test func ourClientVerifiesTheServerAndKeepsTheConnection() throws {
        let pki = try Self.pki.get()
        let server = try server(try settings())
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        var options = HTTPClient.Options()
        options.tls = try TLSClientContext(TLSClientSettings(caFile: pki.path("ca.crt")))
        let connection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port, tls: true)
        #expect(connection.tlsVersion == "TLSv1.3")
        for _ in 0..<3 {  // kept alive: pipelined bytes and a second request go through the same session
            let reply = try connection.request("GET", "/metrics")
            #expect(reply.status == 200 && reply.text == Self.body)
        }
        #expect(try HTTPClient(options: options).get(url: "https://localhost:\(port)/metrics").text == Self.body)

        // The system's CAs do not know ours; another host name is not in the certificate.
        #expect(throws: HTTPClientError.self) { try HTTPClient().get(url: "https://127.0.0.1:\(port)/metrics") }
        do {
            let elsewhere = try self.server(try settings { ($0.certFile, $0.keyFile) = (pki.path("elsewhere.crt"), pki.path("elsewhere.key")) })
            defer { elsewhere.stop() }
            _ = try HTTPClient(options: options).get(url: "https://127.0.0.1:\(elsewhere.boundAddresses[0].port)/metrics")
            Issue.record("a certificate without 127.0.0.1 was accepted")
        } catch let error as HTTPClientError {
            #expect(error.kind == .tls)
            #expect(error.description.contains("certificate verify failed") && error.description.contains("IP address mismatch"), "\(error)")
        }
    }

    /// Streamed bodies go through TLS like plain ones: chunked and gzip on a
    /// kept-alive connection (two requests pipelined in one write), and
    /// ended by the close (after close_notify) for HTTP/1.0; curl agrees.
    @Test func streamedPipelinedAndCloseDelimitedBodiesOverTLS() throws {
        let pki = try Self.pki.get()
        let pieces = (0..<3000).map { Array("piece \($0) of a streamed body\n".utf8) }
        let whole = pieces.flatMap { $0 }
        let context = try TLSServerContext(try settings())
        var configuration = HTTPServer.Configuration()
        configuration.security = { .tls(context) }
        var router = HTTPRouter()
        router.get("/stream") { _ in .stream { sink in for piece in pieces { try sink(piece[...]) } } }
        let server = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)], configuration: configuration)
        server.start(handler: router.handler)
        defer { server.stop() }
        let port = server.boundAddresses[0].port

        var options = HTTPClient.Options()
        options.tls = try TLSClientContext(TLSClientSettings(caFile: pki.path("ca.crt")))
        options.acceptGzip = true
        let connection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port, tls: true)
        try connection.send("GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\nGET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        let gzipped = try connection.readReply()
        #expect(gzipped.headers["Transfer-Encoding"] == "chunked" && gzipped.headers["Content-Encoding"] == "gzip")
        #expect(gzipped.body == whole)
        let plain = try connection.readReply()
        #expect(plain.headers["Content-Encoding"] == nil && plain.body == whole)

        let old = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port, tls: true)
        try old.send("GET /stream HTTP/1.0\r\nHost: t\r\n\r\n")
        let closeDelimited = try old.readReply()
        #expect(closeDelimited.headers["Content-Length"] == nil && closeDelimited.body == whole)
        #expect(!closeDelimited.keepsConnectionOpen)

        let output = runTool("/usr/bin/curl", ["-sS", "--compressed", "--max-time", "10", "--cacert", pki.path("ca.crt"),
                                               "https://127.0.0.1:\(port)/stream"])
        #expect(output.status == 0 && Array(output.stdout.utf8) == whole, "\(output.stderr)")
    }

    @Test func versionsCiphersAndCurvesAreApplied() throws {
        let only13 = try server(try settings { $0.minVersion = .tls13 })
        defer { only13.stop() }
        #expect(try curl(only13.boundAddresses[0].port, ["--tlsv1.2", "--tls-max", "1.2"]).exit != 0)
        #expect(try curl(only13.boundAddresses[0].port, ["--tlsv1.3"]).status == 200)

        let only12 = try server(try settings { $0.maxVersion = .tls12 })
        defer { only12.stop() }
        #expect(try curl(only12.boundAddresses[0].port, ["--tlsv1.3"]).exit != 0)

        let suite = try #require(TLSCipherSuite.named("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"))
        let ciphers = try server(try settings { $0.cipherSuites = [suite, TLSCipherSuite.named("TLS_AES_128_GCM_SHA256")!] })
        defer { ciphers.stop() }
        let twelve = try curl(ciphers.boundAddresses[0].port, ["--tlsv1.2", "--tls-max", "1.2"])
        #expect(twelve.log.contains("SSL connection using TLSv1.2 / ECDHE-ECDSA-AES256-GCM-SHA384"), "\(twelve.log)")
        // As in Go, TLS 1.3 suites are not restricted by cipher_suites.
        let thirteen = try curl(ciphers.boundAddresses[0].port, ["--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"])
        #expect(thirteen.status == 200, "\(thirteen.log)")

        let curves = try server(try settings { $0.curvePreferences = [.curveP384] })
        defer { curves.stop() }
        let port = curves.boundAddresses[0].port
        let p384 = runTool("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-groups", "P-256:P-384", "-brief"], timeout: 10)
        #expect(p384.stderr.contains("Server Temp Key: ECDH, secp384r1") || p384.stderr.contains("Server Temp Key: ECDH, P-384"), "\(p384.stderr)")
        let p256 = runTool("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-groups", "P-256", "-brief"], timeout: 10)
        #expect(p256.status != 0, "a client without P-384 has no group in common")
    }

    /// The five client_auth_type values, as Go's tls package means them.
    @Test(arguments: [
        // (type, no certificate, the right CA's certificate, another CA's certificate)
        (TLSClientAuth.noClientCert, true, true, true),
        (.requestClientCert, true, true, true),
        (.requireAnyClientCert, false, true, true),
        (.verifyClientCertIfGiven, true, true, false),
        (.requireAndVerifyClientCert, false, true, false),
    ])
    func clientAuthTypes(type: TLSClientAuth, withoutCertificate: Bool, rightCA: Bool, otherCA: Bool) throws {
        let pki = try Self.pki.get()
        let server = try server(try settings {
            $0.clientAuth = type
            if type != .noClientCert { $0.clientCAFile = pki.path("client-ca.crt") }
        })
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        for version in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]] {
            let none = try curl(port, version)
            let right = try curl(port, version + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")])
            let other = try curl(port, version + ["--cert", pki.path("client-rogue.crt"), "--key", pki.path("client-rogue.key")])
            #expect((none.status == 200) == withoutCertificate, "\(type) \(version) no certificate: \(none.log)")
            #expect((right.status == 200) == rightCA, "\(type) \(version) right CA: \(right.log)")
            #expect((other.status == 200) == otherCA, "\(type) \(version) other CA: \(other.log)")
            for refused in [none, right, other] where refused.status != 200 {
                #expect(refused.exit != 0 && refused.status == 0, "a handshake failure (TLS 1.3: an alert at the first read): \(refused.log)")
                #expect(refused.body.isEmpty)
            }
        }
    }

    @Test func aClientCertificateWithoutAnAllowedSANIsRefusedAtTheHandshake() throws {
        let pki = try Self.pki.get()
        let server = try server(try settings {
            $0.clientAuth = .requireAndVerifyClientCert
            $0.clientCAFile = pki.path("client-ca.crt")
            $0.clientAllowedSANs = ["scraper.example"]
        })
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        for version in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]] {
            let allowed = try curl(port, version + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")])
            #expect(allowed.status == 200 && allowed.body == Self.body, "\(allowed.log)")
            let other = try curl(port, version + ["--cert", pki.path("client-other.crt"), "--key", pki.path("client-other.key")])
            #expect(other.status == 0 && other.exit != 0, "\(other.log)")
            #expect(other.log.contains("alert"), "the server said why, in an alert: \(other.log)")
        }
        // The same through our client, which names the refusal.
        var options = HTTPClient.Options()
        options.tls = try TLSClientContext(TLSClientSettings(caFile: pki.path("ca.crt"), certFile: pki.path("client-other.crt"),
                                                             keyFile: pki.path("client-other.key")))
        do {
            _ = try HTTPClient(options: options).get(url: "https://127.0.0.1:\(port)/metrics")
            Issue.record("a client certificate with SAN other.example was accepted")
        } catch {
            #expect(error.kind == .tls, "\(error)")
        }
        // An e-mail SAN counts too.
        let byEmail = try self.server(try settings {
            $0.clientAuth = .requireAndVerifyClientCert
            $0.clientCAFile = pki.path("client-ca.crt")
            $0.clientAllowedSANs = ["ops@example.org"]
        })
        defer { byEmail.stop() }
        #expect(try curl(byEmail.boundAddresses[0].port, ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")]).status == 200)
    }

    /// The certificate replaced on disk is served on the next connection;
    /// a broken one keeps the previous and is reported once.
    @Test func aRotatedCertificateIsServedOnTheNextConnection() throws {
        let pki = try Self.pki.get()
        let directory = pki.path("rotation-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try pki.issue("rotating", by: "ca", serial: 0x1001, san: "IP:127.0.0.1", usage: "serverAuth", to: "rotation-a")
        try pki.issue("rotating", by: "ca", serial: 0x2002, san: "IP:127.0.0.1", usage: "serverAuth", to: "rotation-b")
        let (cert, key) = (directory + "/server.crt", directory + "/server.key")
        func install(_ name: String) throws {
            // As certbot and most tools do: a new file renamed over the old one.
            for (from, to) in [(pki.path("\(name).crt"), cert), (pki.path("\(name).key"), key)] {
                try? FileManager.default.removeItem(atPath: to + ".new")
                try FileManager.default.copyItem(atPath: from, toPath: to + ".new")
                guard rename(to + ".new", to) == 0 else { throw ToolError(description: "rename: \(String(cString: strerror(errno)))") }
            }
        }
        try install("rotation-a")
        let problems = Locked<[String?]>([])
        let source = TLSServerContextSource { problem in problems.withLock { $0.append(problem) } }
        let tls = TLSSettings(certFile: cert, keyFile: key)
        let server = try server { source.context(for: tls).map { .tls($0) } ?? .refuse }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        func servedSerial() -> String {
            let shown = runTool("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.path("ca.crt")], timeout: 10)
            return runTool("/usr/bin/openssl", ["x509", "-noout", "-serial"], input: shown.stdout).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(servedSerial() == "serial=1001")
        try install("rotation-b")
        #expect(servedSerial() == "serial=2002", "the next connection, no restart")
        #expect(try curl(port, []).body == Self.body)

        try "not a certificate\n".write(toFile: cert + ".new", atomically: false, encoding: .utf8)
        #expect(rename(cert + ".new", cert) == 0)
        for _ in 0..<3 { #expect(servedSerial() == "serial=2002", "the previous certificate stays") }
        let reported = problems.withLock { $0 }
        #expect(reported.count == 2, "one reload, then one problem: \(reported)")
        #expect(reported.first == .some(nil))
        #expect(reported.last??.hasPrefix("cert_file \(cert): ") == true, "\(reported)")
    }

    @Test func plainHTTPToTheTLSPortIsTold400() throws {
        let server = try server(try settings())
        defer { server.stop() }
        let reply = try curl(server.boundAddresses[0].port, [], scheme: "http")
        #expect(reply.status == 400)
        #expect(reply.body == "Client sent an HTTP request to an HTTPS server.\n")
    }

    @Test func aHandshakeThatNeverCompletesIsCutAtTheHeadDeadline() throws {
        let server = try server({ [context = try TLSServerContext(try settings())] in .tls(context) }) {
            $0.headReadTimeout = .milliseconds(300)
        }
        defer { server.stop() }
        let port = server.boundAddresses[0].port
        let silent = try HTTPClient().connect(host: "127.0.0.1", port: port)
        let partial = try HTTPClient().connect(host: "127.0.0.1", port: port)
        try partial.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])  // a ClientHello record that never ends
        let start = ContinuousClock.now
        #expect(silent.isClosedByPeer(within: .seconds(5)))
        #expect(partial.isClosedByPeer(within: .seconds(5)))
        #expect(ContinuousClock.now - start < .seconds(3))
        // Garbage instead of a ClientHello: closed at once.
        let garbage = try HTTPClient().connect(host: "127.0.0.1", port: port)
        try garbage.send(Array(repeating: 0x41, count: 64) + [13, 10, 13, 10])
        #expect(garbage.isClosedByPeer(within: .seconds(1)))
    }

    /// The loop's own answers go through TLS too: 400 at once for a bad
    /// head, 408 for a head that stops midway.
    @Test func badAndSlowHeadsOverTLSGetTheLoopsAnswers() throws {
        let pki = try Self.pki.get()
        let server = try server({ [context = try TLSServerContext(try settings())] in .tls(context) }) {
            $0.headReadTimeout = .milliseconds(500)
        }
        defer { server.stop() }
        var options = HTTPClient.Options()
        options.tls = try TLSClientContext(TLSClientSettings(caFile: pki.path("ca.crt")))
        let port = server.boundAddresses[0].port
        let bad = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port, tls: true)
        try bad.send("GET / HTTP/1.1\r\nHost t\r\n\r\n")
        let start = ContinuousClock.now
        let badReply = try bad.readReply()
        #expect(badReply.status == 400 && ContinuousClock.now - start < .milliseconds(400), "at once, not at the deadline")
        #expect(bad.isClosedByPeer(within: .seconds(2)))

        let slow = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port, tls: true)
        try slow.send("GET /metrics HTTP/1.1\r\nHost: t\r\n")
        #expect(try slow.readReply().status == 408)
    }

    /// The closing note's figures: the handshake on loopback, and one
    /// 1,000-series scrape over TLS against plain HTTP (medians).
    @Test func handshakeAndScrapeFigures() throws {
        let pki = try Self.pki.get()
        let series = (0..<1000).map { "tcptop_sent_bytes_total{pid=\"\($0)\",comm=\"c\",laddr=\"10.0.0.1\",lport=\"\($0)\",raddr=\"10.0.0.2\",rport=\"443\"} 123456\n" }.joined()
        var router = HTTPRouter()
        router.get("/metrics") { _ in .text(200, series) }
        let context = try TLSServerContext(try settings())
        var tlsConfiguration = HTTPServer.Configuration()
        tlsConfiguration.security = { .tls(context) }
        let tlsServer = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)], configuration: tlsConfiguration)
        let plainServer = try HTTPServer(listenAddresses: [ListenAddress(host: "127.0.0.1", port: 0)])
        tlsServer.start(handler: router.handler)
        plainServer.start(handler: router.handler)
        defer { tlsServer.stop(); plainServer.stop() }

        func median(_ count: Int, _ body: () throws -> Void) rethrows -> Double {
            var times: [Double] = []
            for _ in 0..<count {
                let start = ContinuousClock.now
                try body()
                let (seconds, attoseconds) = (ContinuousClock.now - start).components
                times.append(Double(seconds) * 1e6 + Double(attoseconds) / 1e12)
            }
            return times.sorted()[count / 2]
        }
        var figures: [String] = []
        for version in [TLSVersion.tls13, .tls12] {
            var client = TLSClientSettings(caFile: pki.path("ca.crt"))
            (client.minVersion, client.maxVersion) = (version, version)
            var options = HTTPClient.Options()
            options.tls = try TLSClientContext(client)
            let handshake = try median(200) {
                _ = try HTTPClient(options: options).connect(host: "127.0.0.1", port: tlsServer.boundAddresses[0].port, tls: true)
            }
            figures.append(String(format: "%@ handshake %.0f µs", version.rawValue, handshake))
        }
        var options = HTTPClient.Options()
        options.tls = try TLSClientContext(TLSClientSettings(caFile: pki.path("ca.crt")))
        let tlsConnection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: tlsServer.boundAddresses[0].port, tls: true)
        let plainConnection = try HTTPClient().connect(host: "127.0.0.1", port: plainServer.boundAddresses[0].port)
        let tlsScrape = try median(200) {
            let count = try tlsConnection.request("GET", "/metrics").body.count
            #expect(count == series.utf8.count)
        }
        let plainScrape = try median(200) {
            let count = try plainConnection.request("GET", "/metrics").body.count
            #expect(count == series.utf8.count)
        }
        let tlsFresh = try median(100) {
            _ = try HTTPClient(options: options).get(url: "https://127.0.0.1:\(tlsServer.boundAddresses[0].port)/metrics")
        }
        let plainFresh = try median(100) { _ = try HTTPClient().get(url: "http://127.0.0.1:\(plainServer.boundAddresses[0].port)/metrics") }
        figures.append(String(format: "1,000-series scrape (%d KB) kept alive: TLS %.0f µs, plain %.0f µs; on a new connection: TLS %.0f µs, plain %.0f µs",
                              series.utf8.count / 1000, tlsScrape, plainScrape, tlsFresh, plainFresh))
        print("TLS figures (medians, loopback): " + figures.joined(separator: "; "))
        #expect(tlsScrape < 100_000 && plainScrape < 100_000)
    }
}
