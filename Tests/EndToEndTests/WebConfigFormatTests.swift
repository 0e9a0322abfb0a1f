import Foundation
import Glibc
import TCPTopCore
import TCPTopHTTP
import TestChildProcess
import Testing

/// The format check: the same web config file goes to Debian's
/// node_exporter (exporter-toolkit v0.8, Go 1.19) and to our reader. What
/// one takes the other takes, and what one refuses the other refuses,
/// except the few stricter checks README lists (each named here).
@Suite(.serialized) struct WebConfigFormatTests {
    static let nodeExporter = "/usr/bin/prometheus-node-exporter"

    /// A certificate and key made with Debian's openssl, shared by the cases.
    static let pki: Result<PKI, PeerError> = Result { try PKI() }.mapError { PeerError(description: "\($0)") }

    enum Expect { case bothAccept, bothRefuse, onlyWeRefuse, onlyNodeExporterRefuses }

    static let cases: [(name: String, yaml: String, expect: Expect)] = {
        let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        let hash = "$2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX."
        return [
            ("every TLS key exporter-toolkit v0.8 has", tls + """
                  client_auth_type: RequireAndVerifyClientCert
                  client_ca_file: server.crt
                  min_version: TLS12
                  max_version: TLS13
                  cipher_suites: [\(TLSCipherSuite.all.map(\.goName).joined(separator: ", "))]
                  curve_preferences: [\(TLSCurve.allCases.map(\.rawValue).joined(separator: ", "))]
                  prefer_server_cipher_suites: false
                http_server_config:
                  http2: false
                  headers: {X-Frame-Options: sameorigin, X-Content-Type-Options: nosniff, X-XSS-Protection: "1; mode=block",
                            Content-Security-Policy: "default-src 'none'", Strict-Transport-Security: max-age=60}
                basic_auth_users: {alice: \(hash)}
                """, .bothAccept),
            ("RequireClientCert, the older name", tls + "  client_auth_type: RequireClientCert\n", .bothAccept),
            ("TLS keys without a certificate: plain HTTP", "tls_server_config: {min_version: TLS13, curve_preferences: [X25519]}\n", .bothAccept),
            ("an empty file", "", .bothAccept),
            ("an unknown top key", "tls_server_confg: {}\n", .bothRefuse),
            ("an unknown TLS key", "tls_server_config:\n  cert_filse: server.crt\n", .bothRefuse),
            ("a TLS version", tls + "  min_version: TLS111\n", .bothRefuse),
            ("a cipher suite", tls + "  cipher_suites: [TLS_FOO]\n", .bothRefuse),
            ("one of Go's insecure suites", tls + "  cipher_suites: [TLS_RSA_WITH_3DES_EDE_CBC_SHA]\n", .bothRefuse),
            ("one of Go's insecure suites (CBC SHA256)", tls + "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256]\n", .bothRefuse),
            ("a curve", tls + "  curve_preferences: [CurveP224]\n", .bothRefuse),
            ("a client auth type", tls + "  client_auth_type: RequireCert\n", .bothRefuse),
            ("a client CA without a client auth type", tls + "  client_ca_file: server.crt\n", .bothRefuse),
            ("cert_file without key_file", "tls_server_config:\n  cert_file: server.crt\n", .bothRefuse),
            ("key_file without cert_file", "tls_server_config:\n  key_file: server.key\n", .bothRefuse),
            ("client_auth_type without a certificate", "tls_server_config:\n  client_auth_type: NoClientCert\n", .bothRefuse),
            ("a header that cannot be set", "http_server_config:\n  headers: {Server: x}\n", .bothRefuse),
            ("a header name in lower case", "http_server_config:\n  headers: {x-frame-options: deny}\n", .bothRefuse),
            ("a header value not allowed", "http_server_config:\n  headers: {X-Frame-Options: DENY}\n", .bothRefuse),
            ("a password where the hash goes", "basic_auth_users:\n  john: doe\n", .bothRefuse),
            ("a key given twice", "basic_auth_users: {alice: \(hash)}\nbasic_auth_users: {bob: \(hash)}\n", .bothRefuse),
            ("not YAML", "tls_server_config: [\n", .bothRefuse),
            ("the rate limiter of later exporter-toolkits", "rate_limit: {interval: 1s, burst: 5}\n", .bothRefuse),
            ("an inline certificate of later exporter-toolkits", "tls_server_config:\n  cert: x\n", .bothRefuse),
            // Stricter than exporter-toolkit (README, "Securing the endpoint"):
            ("a verifying client auth type without client_ca_file", tls + "  client_auth_type: RequireAndVerifyClientCert\n", .onlyWeRefuse),
            ("min_version above max_version", tls + "  min_version: TLS13\n  max_version: TLS12\n", .onlyWeRefuse),
            ("a user name with a colon", "basic_auth_users: {\"a:b\": \(hash)}\n", .onlyWeRefuse),
            // A key of later exporter-toolkits (v0.9+) that Debian 12's does not know yet:
            ("client_allowed_sans", tls + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
                + "  client_allowed_sans: [localhost]\n", .onlyNodeExporterRefuses),
        ]
    }()

    @Test(arguments: cases.map(\.name))
    func nodeExporterAndWeAgree(name: String) throws {
        let (_, yaml, expect) = try #require(Self.cases.first { $0.name == name })
        let pki = try Self.pki.get()
        let path = pki.directory + "/web-config-\(UUID().uuidString).yml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }

        let ours = Result { try WebConfigFile.load(path: path) }
        let theirs = try NodeExporter.outcome(webConfig: path)
        let weAccept = (try? ours.get()) != nil
        let (expectUs, expectThem): (Bool, Bool) = switch expect {
        case .bothAccept: (true, true)
        case .bothRefuse: (false, false)
        case .onlyWeRefuse: (false, true)
        case .onlyNodeExporterRefuses: (true, false)
        }
        #expect(weAccept == expectUs, "we: \(ours)")
        #expect(theirs.accepted == expectThem, "node_exporter: \(theirs.log)")
        if case .failure(let error) = ours { #expect(!"\(error)".contains("\n"), "one line") }
    }

    /// The shipped example starts node_exporter, which then asks for the
    /// example's user and password as we do.
    @Test func theShippedExampleServesBasicAuthInNodeExporterToo() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/web-config.yml").path
        let node = try NodeExporter(webConfig: example)
        let port = try node.waitListening()
        let url = "http://127.0.0.1:\(port)/metrics"
        #expect(run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "prometheus:change me", url]).stdout == "200")
        #expect(run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "prometheus:wrong", url]).stdout == "401")
        #expect(run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", url]).stdout == "401")
    }

    /// Our Go → OpenSSL table, as `openssl ciphers -stdname` prints the pairs.
    @Test func theCipherTableIsOpenSSLs() throws {
        let names = TLSCipherSuite.all.filter { !$0.tls13 }.map(\.openSSLName).joined(separator: ":")
        let result = run("/usr/bin/openssl", ["ciphers", "-stdname", names])
        #expect(result.status == 0, "\(result.stderr)")
        var pairs: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 3, fields[1] == "-" { pairs[String(fields[0])] = String(fields[2]) }
        }
        for suite in TLSCipherSuite.all {
            #expect(pairs[suite.goName] == suite.openSSLName, "\(suite.goName)")
        }
        let groups = run("/usr/bin/openssl", ["ecparam", "-list_curves"]).stdout
        for curve in TLSCurve.allCases where curve != .x25519 {
            // P-256 is prime256v1, P-384 secp384r1, P-521 secp521r1.
            let alias = ["P-256": "prime256v1", "P-384": "secp384r1", "P-521": "secp521r1"][curve.openSSLGroup]!
            #expect(groups.contains(alias), "\(curve)")
        }
    }
}

/// A directory with a self-signed certificate and its key (server.crt, server.key).
struct PKI {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "webconfig-pki-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let made = run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                            "-subj", "/CN=localhost", "-days", "2", "-keyout", directory + "/server.key",
                                            "-out", directory + "/server.crt"], timeout: 30)
        guard made.status == 0 else { throw PeerError(description: "openssl req: \(made.stderr)") }
    }
}

/// Debian's node_exporter with a web config file, on a free loopback port.
final class NodeExporter {
    let process = ChildProcess()
    let logFile: String

    struct Outcome {
        var accepted: Bool
        var log: String
    }

    init(webConfig: String) throws {
        guard FileManager.default.isExecutableFile(atPath: WebConfigFormatTests.nodeExporter) else {
            throw PeerError(description: "\(WebConfigFormatTests.nodeExporter) is missing: apt-get install prometheus-node-exporter (make deps)")
        }
        logFile = NSTemporaryDirectory() + "node-exporter-\(UUID().uuidString).log"
        FileManager.default.createFile(atPath: logFile, contents: nil)
        process.executableURL = URL(fileURLWithPath: WebConfigFormatTests.nodeExporter)
        process.arguments = ["--web.config.file=\(webConfig)", "--web.listen-address=127.0.0.1:0", "--collector.disable-defaults"]
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        Child.stop(process, grace: 2)
        try? FileManager.default.removeItem(atPath: logFile)
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    /// Serving ("TLS is enabled/disabled" is logged once the file was taken)
    /// or exited (a refused file), whichever comes first within 10 s.
    func waitOutcome(timeout: Double = 10) throws -> Outcome {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log.contains("msg=\"TLS is enabled.\"") || log.contains("msg=\"TLS is disabled.\"") {
                return Outcome(accepted: true, log: log)
            }
            if !process.isRunning { return Outcome(accepted: false, log: log) }
            usleep(10_000)
        }
        throw PeerError(description: "node_exporter neither served nor exited within \(timeout) s: \(log)")
    }

    /// The port it listens on, once it serves.
    func waitListening() throws -> UInt16 {
        let outcome = try waitOutcome()
        guard outcome.accepted, let range = outcome.log.range(of: "address=127.0.0.1:") else {
            throw PeerError(description: "node_exporter refused the file: \(outcome.log)")
        }
        guard let port = UInt16(outcome.log[range.upperBound...].prefix { $0.isNumber }) else {
            throw PeerError(description: "no port in \(outcome.log)")
        }
        return port
    }

    static func outcome(webConfig: String) throws -> Outcome {
        try NodeExporter(webConfig: webConfig).waitOutcome()
    }
}
