import Foundation
import Glibc
import TCPTopCore
import TCPTopHTTP
import Testing

/// `--web.config.file` on the real daemon, with curl and hashes from
/// Debian's htpasswd: basic auth on every path, the configured headers, a
/// file changed on disk in force at the next request, a broken change kept
/// out, and what 10,000 requests cost (TLS: TLSDaemonTests).
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct WebConfigDaemonTests {
    static let password = "s3cret-Passw0rd"

    @Test func basicAuthGuardsEveryPathAndHeadersAreAdded() throws {
        let web = try webConfig(users: ["alice": Self.password],
                                extra: "http_server_config:\n  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n")
        let daemon = try ExporterProcess(arguments: ["--web.config.file", web])
        try daemon.waitReady()
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-auth-c", serverName: "tt-auth-s",
                                                 clientSends: 123_456, serverSends: 7_890)
        let base = "http://127.0.0.1:\(daemon.port)"

        let scrape = curl(["-u", "alice:\(Self.password)", base + "/metrics"])
        #expect(scrape.status == 200)
        #expect(scrape.headers["x-frame-options"] == "deny" && scrape.headers["x-content-type-options"] == "nosniff")
        let samples = try ExpositionParser.parse(scrape.body)
        let client = ["pid": "\(exchange.clientPID)", "comm": "tt-auth-c", "lport": "\(exchange.clientPort)"]
        #expect(value(samples, "tcptop_sent_bytes_total", client) == 123_456)
        #expect(value(samples, "tcptop_received_bytes_total", client) == 7_890)
        #expect(curl(["-u", "alice:\(Self.password)", base + "/"]).status == 200)
        #expect(curl(["-u", "alice:\(Self.password)", base + "/nope"]).status == 404)

        for path in ["/metrics", "/", "/nope"] {
            for credentials in [[], ["-u", "alice:wrong"], ["-u", "mallory:\(Self.password)"], ["-u", "alice:"],
                                ["-H", "Authorization: Bearer \(Self.password)"]] {
                let reply = curl(credentials + [base + path])
                #expect(reply.status == 401, "\(path) \(credentials)")
                #expect(reply.headers["www-authenticate"] == "Basic realm=\"tcptop-exporter\"")
                #expect(reply.headers["x-frame-options"] == "deny")
                #expect(reply.body == "Unauthorized\n")
            }
        }
        #expect(!daemon.log.contains(Self.password), "the password never reaches the log")
        #expect(daemon.log.contains("msg=\"web config loaded\" basic_auth_users=1"))
    }

    @Test func aChangedFileIsInForceAtTheNextRequestAndABrokenOneIsKeptOut() throws {
        let web = try webConfig(users: ["alice": "first-pw"])
        let daemon = try ExporterProcess(arguments: ["--web.config.file", web])
        try daemon.waitReady()
        let url = "http://127.0.0.1:\(daemon.port)/"
        #expect(curl(["-u", "alice:first-pw", url]).status == 200)

        try webConfigText(users: ["bob": "second-pw"]).write(toFile: web, atomically: true, encoding: .utf8)
        #expect(curl(["-u", "bob:second-pw", url]).status == 200, "the next request, without a restart")
        #expect(curl(["-u", "alice:first-pw", url]).status == 401)

        try "basic_auth_users:\n  bob: second-pw\n".write(toFile: web, atomically: true, encoding: .utf8)  // a password, not a hash
        for _ in 0..<5 { #expect(curl(["-u", "bob:second-pw", url]).status == 200, "the previous settings stay") }
        let kept = daemon.log.split(separator: "\n").filter { $0.contains("keeping the previous web config") }
        #expect(kept.count == 1, "one line per change, not per request: \(kept)")
        #expect(kept.first?.contains("basic_auth_users.bob: must be a bcrypt hash") == true)
        #expect(!daemon.log.contains("second-pw"))

        try webConfigText(users: [:]).write(toFile: web, atomically: true, encoding: .utf8)
        #expect(curl([url]).status == 200, "no users: no credentials asked")
    }

    @Test func badFilesAreRefusedAtStart() throws {
        let bad = try writeConfig("basic_auth_users:\n  alice: hunter2\n")
        let badDaemon = try ExporterProcess(arguments: ["--web.config.file", bad])
        #expect(try badDaemon.waitExit() == 2)
        #expect(badDaemon.log.hasPrefix("tcptop-exporter: web config: basic_auth_users.alice: must be a bcrypt hash"))
        #expect(badDaemon.log.split(separator: "\n").count == 1 && !badDaemon.log.contains("hunter2"))

        let missing = try ExporterProcess(arguments: ["--web.config.file", "/nonexistent/web.yml"])
        #expect(try missing.waitExit() == 2)
        #expect(missing.log == "tcptop-exporter: web config: cannot read /nonexistent/web.yml: No such file or directory\n")
    }

    /// The flag overrides the config key; "" is none; a reload follows a new key.
    @Test func theFlagOverridesTheKeyAndAReloadFollowsTheKey() throws {
        let alice = try webConfig(users: ["alice": "a-pw"]), bob = try webConfig(users: ["bob": "b-pw"])
        let config = try writeConfig("web:\n  config_file: \(alice)\n")
        let url: (ExporterProcess) -> String = { "http://127.0.0.1:\($0.port)/" }

        let flagged = try ExporterProcess(arguments: ["--config.file", config, "--web.config.file", bob])
        try flagged.waitReady()
        #expect(curl(["-u", "bob:b-pw", url(flagged)]).status == 200)
        #expect(curl(["-u", "alice:a-pw", url(flagged)]).status == 401)

        let none = try ExporterProcess(arguments: ["--config.file", config, "--web.config.file", ""])
        try none.waitReady()
        #expect(curl([url(none)]).status == 200)

        let keyed = try ExporterProcess(arguments: ["--config.file", config])
        try keyed.waitReady()
        #expect(curl(["-u", "alice:a-pw", url(keyed)]).status == 200)
        try "web:\n  config_file: \(bob)\n".write(toFile: config, atomically: true, encoding: .utf8)
        try keyed.reload()
        #expect(curl(["-u", "bob:b-pw", url(keyed)]).status == 200)
        #expect(curl(["-u", "alice:a-pw", url(keyed)]).status == 401)
        try "web:\n  config_file: /nonexistent/web.yml\n".write(toFile: config, atomically: true, encoding: .utf8)
        try keyed.reload()
        #expect(keyed.log.contains("reload: web config: cannot read /nonexistent/web.yml: No such file or directory; keeping the previous web config"))
        #expect(curl(["-u", "bob:b-pw", url(keyed)]).status == 200)
    }

    /// The "done when": 10,000 requests with a wrong password cost
    /// the daemon no more CPU than 10,000 with the right one (both are
    /// answered from the cache after one bcrypt each). Measured on one
    /// kept-alive connection, as the daemon's own CPU time.
    @Test func tenThousandWrongPasswordsCostNoMoreThanTenThousandGoodOnes() throws {
        let web = try webConfig(users: ["alice": Self.password])
        // The polls' cost is in the daemon's CPU too: one small view, so it does not follow other suites' connections.
        let small = try smallViewConfig()
        let daemon = try ExporterProcess(arguments: ["--config.file", small, "--web.config.file", web])
        try daemon.waitReady()
        let plain = try ExporterProcess(arguments: ["--config.file", small])
        try plain.waitReady()
        let good = "Basic " + Data("alice:\(Self.password)".utf8).base64EncodedString()
        let wrong = "Basic " + Data("alice:not-it".utf8).base64EncodedString()

        let wrongCost = try requestCost(daemon, authorization: wrong, count: 10_000, status: 401)
        let goodCost = try requestCost(daemon, authorization: good, count: 10_000, status: 200)
        let plainCost = try requestCost(plain, authorization: nil, count: 10_000, status: 200)
        print(String(format: "10,000 requests for / on one connection: wrong password %.2f s CPU (%.2f s wall), right password %.2f s CPU (%.2f s wall), "
                         + "no web config %.2f s CPU (%.2f s wall)",
                     wrongCost.cpu, wrongCost.wall, goodCost.cpu, goodCost.wall, plainCost.cpu, plainCost.wall))
        // 10,000 bcrypts at cost 10 would take ~500 s of CPU here, ~100 times the
        // requests themselves; the cache makes both cost about what a request
        // without a web config costs (a ratio in one run: this machine's speed
        // varies, 10,000 plain requests took 3.1-3.5 s of a debug build's CPU).
        #expect(wrongCost.cpu <= 3 * max(goodCost.cpu, 0.1), "wrong \(wrongCost.cpu) s against right \(goodCost.cpu) s")
        #expect(wrongCost.cpu < 5 * max(plainCost.cpu, 0.1), "not one bcrypt per request: wrong \(wrongCost.cpu) s against none \(plainCost.cpu) s")
    }

    // MARK: Helpers

    /// `count` requests on one kept-alive connection; the daemon's CPU time
    /// (user + system, from /proc) and the wall time they took.
    private func requestCost(_ daemon: ExporterProcess, authorization: String?, count: Int, status: Int) throws -> (cpu: Double, wall: Double) {
        var options = HTTPClient.Options()
        options.timeout = .seconds(10)
        let connection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: daemon.port)
        let headers: HTTPHeaders = authorization.map { ["Authorization": $0] } ?? [:]
        _ = try connection.request("GET", "/", headers: headers)  // the one bcrypt, outside the measure
        let cpuBefore = try cpuSeconds(daemon.process.processIdentifier), start = Date()
        for _ in 0..<count {
            let answered = try connection.request("GET", "/", headers: headers).status
            guard answered == status else { throw PeerError(description: "answered \(answered), expected \(status)") }
        }
        return (try cpuSeconds(daemon.process.processIdentifier) - cpuBefore, Date().timeIntervalSince(start))
    }

    private func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name (which may hold spaces): utime is the 14th field, stime the 15th.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// A web config file with these users (password → bcrypt by htpasswd, cost 10).
func webConfig(users: [String: String], extra: String = "") throws -> String {
    try writeConfig(try webConfigText(users: users) + extra)
}

func webConfigText(users: [String: String]) throws -> String {
    guard !users.isEmpty else { return "basic_auth_users: {}\n" }
    var text = "basic_auth_users:\n"
    for (user, password) in users.sorted(by: { $0.key < $1.key }) {
        let result = run("/usr/bin/htpasswd", ["-nbBC", "10", user, password])
        guard result.status == 0, let colon = result.stdout.firstIndex(of: ":") else {
            throw PeerError(description: "htpasswd (apache2-utils; make deps): \(result.stderr)")
        }
        text += "  \(user): \(result.stdout[result.stdout.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines))\n"
    }
    return text
}

/// curl -s -i: status, headers (lowercased names) and body.
func curl(_ arguments: [String]) -> (status: Int, headers: [String: String], body: String) {
    let result = run("/usr/bin/curl", ["-s", "-i", "--max-time", "10"] + arguments, timeout: 20)
    guard let split = result.stdout.range(of: "\r\n\r\n") else { return (0, [:], result.stdout + result.stderr) }
    let head = result.stdout[..<split.lowerBound].components(separatedBy: "\r\n")
    var headers: [String: String] = [:]
    for line in head.dropFirst() {
        let parts = line.split(separator: ":", maxSplits: 1)
        if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
    }
    let status = head.first.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
    return (status, headers, String(result.stdout[split.upperBound...]))
}
