import Foundation
import Glibc
import TCPTopCore
import TestChildProcess
import Testing

/// `--web.config.file` with `tls_server_config` on the real daemon: curl
/// over TLS 1.2 and 1.3 with basic auth gets the exact bytes of a known
/// exchange, the same file starts Debian's node_exporter with TLS, and
/// Debian's Prometheus scrapes the daemon over TLS with basic auth.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct TLSDaemonTests {
    static let password = "s3cret-TLS-pw"
    static let pki: Result<TLSPKI, PeerError> = Result { try TLSPKI() }.mapError { PeerError(description: "\($0)") }

    /// The file, with relative certificate paths (relative to the file, as in exporter-toolkit).
    private func tlsWebConfig(_ pki: TLSPKI) throws -> String {
        let path = pki.directory + "/web-config-\(UUID().uuidString).yml"
        try ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n"
            + (try webConfigText(users: ["alice": Self.password]))).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A daemon that sent READY=1. The free port is only free when asked:
    /// with the suites in parallel, a client may take it (as its ephemeral
    /// port) before the daemon binds it; then another port is tried.
    private func readyDaemon(_ arguments: [String]) throws -> ExporterProcess {
        for _ in 0..<2 {
            let daemon = try ExporterProcess(arguments: arguments)
            do {
                try daemon.waitReady()
                return daemon
            } catch where daemon.log.contains("Address already in use") {
                continue
            }
        }
        let daemon = try ExporterProcess(arguments: arguments)
        try daemon.waitReady()
        return daemon
    }

    @Test func curlOverTLS12And13WithBasicAuthGetsExactBytes() throws {
        let pki = try Self.pki.get()
        let daemon = try readyDaemon(["--web.config.file", try tlsWebConfig(pki)])
        #expect(daemon.log.contains("msg=\"web config loaded\"") && daemon.log.contains("tls=\"TLS12-TLS13 NoClientCert\""), "\(daemon.log)")
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-tls-c", serverName: "tt-tls-s",
                                                 clientSends: 234_567, serverSends: 8_901)
        let client = ["pid": "\(exchange.clientPID)", "comm": "tt-tls-c", "lport": "\(exchange.clientPort)"]
        for host in ["127.0.0.1", "[::1]"] {
            let url = "https://\(host):\(daemon.port)/metrics"
            for version in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]] {
                let scrape = curl(["--cacert", pki.path("ca.crt")] + version + ["-u", "alice:\(Self.password)", url])
                #expect(scrape.status == 200, "\(host) \(version): \(scrape.body)")
                let samples = try ExpositionParser.parse(scrape.body)
                #expect(value(samples, "tcptop_sent_bytes_total", client) == 234_567)
                #expect(value(samples, "tcptop_received_bytes_total", client) == 8_901)
                let wrong = curl(["--cacert", pki.path("ca.crt")] + version + ["-u", "alice:wrong", url])
                #expect(wrong.status == 401 && wrong.headers["www-authenticate"] == "Basic realm=\"tcptop-exporter\"")
            }
        }
        // Plain HTTP to the TLS port is told so; a client that does not know the CA refuses the server.
        let plain = curl(["-u", "alice:\(Self.password)", "http://127.0.0.1:\(daemon.port)/metrics"])
        #expect(plain.status == 400 && plain.body == "Client sent an HTTP request to an HTTPS server.\n")
        #expect(curl(["https://127.0.0.1:\(daemon.port)/metrics"]).status == 0)
        #expect(!daemon.log.contains(Self.password))
    }

    @Test func aMissingCertificateIsOneLineAtStartAndTLSCannotBeTurnedOffWhileRunning() throws {
        let missing = try writeConfig("tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n")
        let refused = try ExporterProcess(arguments: ["--web.config.file", missing])
        #expect(try refused.waitExit() == 2)
        #expect(refused.log == "tcptop-exporter: web config: tls_server_config: cannot read cert_file /nonexistent/server.crt: No such file or directory\n")
        #expect(refused.notify.messages.isEmpty, "never READY")

        let pki = try Self.pki.get()
        let web = try tlsWebConfig(pki)
        let daemon = try readyDaemon(["--web.config.file", web])
        try (try webConfigText(users: [:])).write(toFile: web, atomically: true, encoding: .utf8)
        let url = "https://127.0.0.1:\(daemon.port)/metrics"
        #expect(curl(["--cacert", pki.path("ca.crt"), "-u", "alice:\(Self.password)", url]).status == 200, "still TLS, still the user")
        #expect(daemon.log.contains("web config: tls_server_config: TLS cannot be turned off while running; restart tcptop-exporter; keeping the previous web config"))
    }

    /// A certificate renewed on disk is served by the running daemon from
    /// the next connection on (the serial as `openssl s_client` sees it); a
    /// broken one keeps the previous and is logged once.
    @Test func aRenewedCertificateIsServedWithoutARestart() throws {
        let pki = try Self.pki.get()
        let directory = pki.path("renewal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func issue(serial: String) throws {
            let made = run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                                "-days", "2", "-subj", "/CN=localhost", "-CA", pki.path("ca.crt"), "-CAkey", pki.path("ca.key"),
                                                "-set_serial", serial, "-addext", "subjectAltName=IP:127.0.0.1",
                                                "-keyout", directory + "/new.key", "-out", directory + "/new.crt"], timeout: 30)
            guard made.status == 0 else { throw PeerError(description: "openssl: \(made.stderr)") }
            // The key first: until the certificate follows, the pair does not match and the previous one stays.
            guard rename(directory + "/new.key", directory + "/server.key") == 0,
                  rename(directory + "/new.crt", directory + "/server.crt") == 0 else { throw PeerError(description: "rename failed") }
        }
        try issue(serial: "0x0A01")
        let web = directory + "/web-config.yml"
        try "tls_server_config: {cert_file: server.crt, key_file: server.key}\n".write(toFile: web, atomically: true, encoding: .utf8)
        let daemon = try readyDaemon(["--web.config.file", web])
        func servedSerial() -> String {
            let shown = run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(daemon.port) -CAfile \(pki.path("ca.crt")) </dev/null 2>/dev/null"
                                            + " | openssl x509 -noout -serial"], timeout: 20)
            return shown.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(servedSerial() == "serial=0A01")
        try issue(serial: "0x0B02")
        #expect(servedSerial() == "serial=0B02", "the next connection, no restart, no SIGHUP")
        #expect(curl(["--cacert", pki.path("ca.crt"), "https://127.0.0.1:\(daemon.port)/"]).status == 200)
        #expect(daemon.log.contains("msg=\"TLS certificate reloaded\""))

        try "garbage\n".write(toFile: directory + "/server.crt", atomically: true, encoding: .utf8)
        for _ in 0..<3 { #expect(servedSerial() == "serial=0B02", "the previous certificate stays") }
        let kept = daemon.log.split(separator: "\n").filter { $0.contains("new connections keep the previous certificate") }
        #expect(kept.count == 1, "one line: \(kept)")
        #expect(kept.first?.contains("TLS: cert_file \(directory)/server.crt: ") == true, "\(kept)")
    }

    /// The format check with TLS: the very file starts node_exporter, which then serves TLS and asks for the user.
    @Test func theSameFileStartsNodeExporterWithTLS() throws {
        let pki = try Self.pki.get()
        let node = try NodeExporter(webConfig: try tlsWebConfig(pki))
        let port = try node.waitListening()
        #expect(node.log.contains("msg=\"TLS is enabled.\""), "\(node.log)")
        let url = "https://127.0.0.1:\(port)/metrics"
        let good = curl(["--cacert", pki.path("ca.crt"), "--tlsv1.3", "-u", "alice:\(Self.password)", url])
        #expect(good.status == 200 && good.body.contains("# TYPE"))
        #expect(curl(["--cacert", pki.path("ca.crt"), "--tlsv1.2", "--tls-max", "1.2", "-u", "alice:wrong", url]).status == 401)
    }

    /// The issue's proof: Debian's Prometheus scrapes the daemon over TLS
    /// with basic auth (scheme https, tls_config.ca_file,
    /// basic_auth.password_file) and stores the exact bytes of an exchange.
    @Test func prometheusScrapesOverTLSWithBasicAuth() throws {
        let pki = try Self.pki.get()
        let daemon = try readyDaemon(["--web.config.file", try tlsWebConfig(pki)])
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-prom-c", serverName: "tt-prom-s",
                                                 clientSends: 345_678, serverSends: 9_012)
        let prometheus = try PrometheusProcess(target: "127.0.0.1:\(daemon.port)", caFile: pki.path("ca.crt"),
                                               user: "alice", password: Self.password)
        let query = "tcptop_sent_bytes_total{comm=\"tt-prom-c\",pid=\"\(exchange.clientPID)\",lport=\"\(exchange.clientPort)\"}"
        let result = try prometheus.waitForSample(query, timeout: 30)
        #expect(result.value == "345678", "\(result)")
        #expect(result.labels["job"] == "tcptop" && result.labels["instance"] == "127.0.0.1:\(daemon.port)")
        let up = try prometheus.waitForSample("up{job=\"tcptop\"}", timeout: 10)
        #expect(up.value == "1")
        let received = "tcptop_received_bytes_total{comm=\"tt-prom-c\",pid=\"\(exchange.clientPID)\",lport=\"\(exchange.clientPort)\"}"
        #expect(try prometheus.waitForSample(received, timeout: 10).value == "9012")
    }
}

/// A CA and a server certificate it signs (SANs 127.0.0.1, ::1, localhost),
/// made with Debian's openssl in a temp directory.
struct TLSPKI {
    let directory: String
    func path(_ name: String) -> String { directory + "/" + name }

    init() throws {
        directory = NSTemporaryDirectory() + "tls-daemon-pki-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        for arguments in [
            ["req", "-x509"] + key + ["-subj", "/CN=tcptop test CA", "-keyout", path("ca.key"), "-out", path("ca.crt")],
            ["req", "-x509"] + key + ["-subj", "/CN=localhost", "-CA", path("ca.crt"), "-CAkey", path("ca.key"),
                                      "-addext", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost", "-addext", "basicConstraints=CA:FALSE",
                                      "-keyout", path("server.key"), "-out", path("server.crt")],
        ] {
            let made = run("/usr/bin/openssl", arguments, timeout: 30)
            guard made.status == 0 else { throw PeerError(description: "openssl \(arguments.prefix(2)): \(made.stderr)") }
        }
    }
}

/// Debian's Prometheus scraping one target over TLS with basic auth, every
/// second, with its own storage in a temp directory, on a free port.
final class PrometheusProcess {
    static let binary = "/usr/bin/prometheus"
    let process = ChildProcess()
    let directory: String
    let port = ExporterProcess.freePort()

    init(target: String, caFile: String, user: String, password: String) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw PeerError(description: "\(Self.binary) is missing: apt-get install prometheus (make deps)")
        }
        directory = NSTemporaryDirectory() + "prometheus-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        try "\(password)\n".write(toFile: directory + "/password", atomically: true, encoding: .utf8)
        try """
            global: {scrape_interval: 1s, scrape_timeout: 1s}
            scrape_configs:
              - job_name: tcptop
                scheme: https
                tls_config: {ca_file: \(caFile)}
                basic_auth: {username: \(user), password_file: \(directory)/password}
                static_configs: [{targets: ["\(target)"]}]

            """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: directory + "/log", contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                             "--web.listen-address=127.0.0.1:\(port)"]
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/log"))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        Child.stop(process, grace: 5)
        try? FileManager.default.removeItem(atPath: directory)
    }

    var log: String { (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? "" }

    struct Sample { var labels: [String: String]; var value: String }

    /// Asks the HTTP API (an instant query) until the series is there, at most `timeout` seconds.
    func waitForSample(_ query: String, timeout: Double) throws -> Sample {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            guard process.isRunning else { throw PeerError(description: "prometheus exited: \(log)") }
            let reply = run("/usr/bin/curl", ["-s", "--max-time", "2", "-G", "--data-urlencode", "query=\(query)",
                                              "http://127.0.0.1:\(port)/api/v1/query"], timeout: 5)
            last = reply.stdout
            if let json = try? JSONSerialization.jsonObject(with: Data(reply.stdout.utf8)) as? [String: Any],
               let data = json["data"] as? [String: Any], let results = data["result"] as? [[String: Any]],
               let first = results.first, let metric = first["metric"] as? [String: String],
               let value = first["value"] as? [Any], value.count == 2, let text = value[1] as? String {
                return Sample(labels: metric, value: text)
            }
            usleep(200_000)
        }
        let targets = run("/usr/bin/curl", ["-s", "--max-time", "2", "http://127.0.0.1:\(port)/api/v1/targets"], timeout: 5).stdout
        throw PeerError(description: "no \(query) in Prometheus within \(timeout) s: \(last); targets: \(targets.prefix(600))")
    }
}
