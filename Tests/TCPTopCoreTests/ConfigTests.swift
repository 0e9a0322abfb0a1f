import Foundation
import Testing
import TCPTopCore

@Suite struct ConfigTests {
    @Test func defaultsAreTheDocumentedValues() throws {
        let config = ExporterConfig()
        #expect(config.web.listenAddresses == [ListenAddress(host: nil, port: 9435)])
        #expect(config.web.telemetryPath == "/metrics")
        #expect(config.web.maxRequests == 40)
        #expect(config.web.readTimeout == .seconds(10))
        #expect(config.web.writeTimeout == .seconds(30))
        #expect(config.bpf.mapCapacity == 65536)
        #expect(config.connections.closedRetention == .seconds(300))
        #expect(config.connections.pollInterval == .seconds(1))
        #expect(config.views == [ViewConfig(prefix: "tcptop", labels: [.pid, .comm, .family, .laddr, .lport, .raddr, .rport], maxSeries: 100_000)])
        #expect(config.log.level == .info)
        #expect(config.log.format == .logfmt)
        #expect(try ExporterConfig.load(path: nil) == config)
        #expect(try ExporterConfig.parse(yaml: "") == config)
        #expect(try ExporterConfig.parse(yaml: "# nothing\n") == config)
        #expect(try ExporterConfig.parse(yaml: "web:\nlog:\n") == config)
    }

    @Test func shippedFileParsesToTheDefaultsAndNamesEveryKey() throws {
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let path = packageRoot.appendingPathComponent("Config/tcptop-exporter.yml").path
        #expect(try ExporterConfig.load(path: path) == ExporterConfig())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for key in ["web", "listen_addresses", "telemetry_path", "max_requests", "read_timeout", "write_timeout",
                    "bpf", "map_capacity", "attach_mode", "read_path", "connections", "closed_retention", "poll_interval",
                    "views", "prefix", "labels", "max_series", "log", "level", "format"] {
            #expect(text.contains("\(key):"), "the shipped file does not document \(key)")
        }
    }

    @Test func parsesEveryKey() throws {
        let config = try ExporterConfig.parse(yaml: """
            web:
              listen_addresses: ["[::1]:9100", "127.0.0.1:9101", "localhost:9102"]
              telemetry_path: /tcp
              max_requests: 3
              read_timeout: 500ms
              write_timeout: 1m30s
            bpf:
              map_capacity: 1024
              attach_mode: fexit
              read_path: socket_hash
            connections:
              closed_retention: 1h
              poll_interval: 2s
            views:
              - prefix: tcptop
              - prefix: "tcp:by_process"
                labels: [comm, pid]
                max_series: 100
            log: {level: debug, format: json}
            """)
        #expect(config.web.listenAddresses == [
            ListenAddress(host: "::1", port: 9100), ListenAddress(host: "127.0.0.1", port: 9101),
            ListenAddress(host: "localhost", port: 9102),
        ])
        #expect(config.web.telemetryPath == "/tcp")
        #expect(config.web.maxRequests == 3)
        #expect(config.web.readTimeout == .milliseconds(500))
        #expect(config.web.writeTimeout == .seconds(90))
        #expect(config.bpf.mapCapacity == 1024)
        #expect(config.bpf.attachMode == .fexit)
        #expect(config.bpf.readPath == .socketHash)
        #expect(config.connections.closedRetention == .seconds(3600))
        #expect(config.connections.pollInterval == .seconds(2))
        #expect(config.views == [ViewConfig(), ViewConfig(prefix: "tcp:by_process", labels: [.pid, .comm], maxSeries: 100)])
        #expect(config.log.level == .debug)
        #expect(config.log.format == .json)
    }

    @Test(arguments: [
        ("bpf: {attach_mode: kprobes}",
         #"config: bpf.attach_mode: must be one of auto, tp_btf, raw_tp, fexit, kprobe, got "kprobes""#),
        ("bpf: {read_path: iterator}",
         #"config: bpf.read_path: must be one of auto, storage_iterator, storage_array, socket_hash, got "iterator""#),
        ("bpf: {map_capacity: lots}",
         #"config: bpf.map_capacity: must be an integer between 1 and 16777216, got "lots""#),
        ("bpf: {map_capacity: 0}",
         #"config: bpf.map_capacity: must be an integer between 1 and 16777216, got "0""#),
        ("bpf: {map_capacity: 16777217}",
         #"config: bpf.map_capacity: must be an integer between 1 and 16777216, got "16777217""#),
        ("bpf: {map_capacity: [1]}",
         #"config: bpf.map_capacity: must be an integer between 1 and 16777216, got a list"#),
        ("webb: {}",
         "config: webb: unknown key (known keys here: web, bpf, connections, views, log)"),
        ("web: {listen_address: ':1'}",
         "config: web.listen_address: unknown key (known keys here: listen_addresses, telemetry_path, max_requests, read_timeout, write_timeout)"),
        ("web: [1]",
         "config: web: must be a mapping with keys listen_addresses, telemetry_path, max_requests, read_timeout, write_timeout, got a list"),
        ("[1, 2]",
         "config: must be a mapping with keys web, bpf, connections, views, log, got a list"),
        ("web: {listen_addresses: ':9435'}",
         #"config: web.listen_addresses: must be a list of host:port addresses, got ":9435""#),
        ("web: {listen_addresses: []}",
         "config: web.listen_addresses: must list at least one address"),
        ("web: {listen_addresses: [':9435', ':0']}",
         #"config: web.listen_addresses[1]: port must be a number between 1 and 65535, got ":0""#),
        ("web: {listen_addresses: ['::1:9435']}",
         #"config: web.listen_addresses[0]: an IPv6 address must be in brackets, like [::1]:9435, got "::1:9435""#),
        ("web: {listen_addresses: [':1', ':1']}",
         #"config: web.listen_addresses[1]: ":1" is listed twice"#),
        ("web: {telemetry_path: /}",
         ##"config: web.telemetry_path: must be a path that starts with "/" and is not "/", without spaces, "?" or "#", got "/""##),
        ("web: {telemetry_path: metrics}",
         ##"config: web.telemetry_path: must be a path that starts with "/" and is not "/", without spaces, "?" or "#", got "metrics""##),
        ("web: {max_requests: -1}",
         #"config: web.max_requests: must be an integer between 1 and 1000000, got "-1""#),
        ("web: {read_timeout: 10}",
         #"config: web.read_timeout: must be a duration like 500ms, 30s, 5m, 1h or 1m30s, got "10""#),
        ("web: {write_timeout: 0s}",
         #"config: web.write_timeout: must be longer than zero, got "0s""#),
        ("connections: {closed_retention: -5m}",
         #"config: connections.closed_retention: must be a duration like 500ms, 30s, 5m, 1h or 1m30s, got "-5m""#),
        ("connections: {poll_interval: }",
         "config: connections.poll_interval: must be a duration like 500ms, 30s, 5m, 1h or 1m30s, got nothing"),
        ("views: []",
         "config: views: must list at least one view"),
        ("views: [tcptop]",
         #"config: views[0]: must be a mapping of prefix, labels, max_series, got "tcptop""#),
        ("views: [{prefix: 1abc}]",
         #"config: views[0].prefix: must be a metric name prefix matching [a-zA-Z_:][a-zA-Z0-9_:]*, got "1abc""#),
        ("views: [{prefix: a}, {prefix: b}, {prefix: a}]",
         #"config: views[2].prefix: "a" is already used by views[0]"#),
        ("views: [{labels: [pid, port]}]",
         #"config: views[0].labels[1]: must be one of pid, comm, family, laddr, lport, raddr, rport, got "port""#),
        ("views: [{labels: [pid, comm, pid]}]",
         #"config: views[0].labels[2]: "pid" is listed twice"#),
        ("views: [{max_series: -1}]",
         #"config: views[0].max_series: must be an integer between 0 and 2147483647 (0 = no limit), got "-1""#),
        ("views: [{size: 1}]",
         "config: views[0].size: unknown key (known keys here: prefix, labels, max_series)"),
        ("log: {level: verbose}",
         #"config: log.level: must be one of debug, info, warn, error, got "verbose""#),
        ("log: {format: text}",
         #"config: log.format: must be one of logfmt, json, got "text""#),
        ("log:\n  level: info\n  level: debug",
         "config: log.level: given more than once"),
    ])
    func badConfigGivesOneLineNamingTheKey(yaml: String, message: String) {
        #expect {
            try ExporterConfig.parse(yaml: yaml)
        } throws: { error in
            "\(error)" == message
        }
    }

    @Test(arguments: ["web: [", "a: b: c", "\t- x"])
    func invalidYAMLGivesOneLine(yaml: String) throws {
        let error = try #require(throws: ConfigError.self) { try ExporterConfig.parse(yaml: yaml) }
        #expect(error.description.hasPrefix("config: invalid YAML: "))
        #expect(!error.description.contains("\n"))
    }

    @Test func unreadableFileGivesOneLine() throws {
        let error = try #require(throws: ConfigError.self) {
            try ExporterConfig.load(path: "/nonexistent/tcptop-exporter.yml")
        }
        #expect(error.description == "config: cannot read /nonexistent/tcptop-exporter.yml: No such file or directory")
        #expect(!error.description.contains("\n"))
    }

    @Test func durationsConvertToSeconds() {
        #expect(Duration.milliseconds(1500).inSeconds == 1.5)
        #expect(ExporterConfig().connections.closedRetention.inSeconds == 300)
    }
}

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("1m30s", 90_000),
        ("2d", 172_800_000), ("1w", 604_800_000), ("1y", 31_536_000_000), ("0", 0), ("1h0m5s", 3_605_000),
        ("1s500ms", 1500),
    ] as [(String, Int64)])
    func parses(text: String, milliseconds: Int64) {
        #expect(parseDuration(text) == .milliseconds(milliseconds))
    }

    @Test(arguments: ["", "5", "1s1m", "1m1m", "-1s", "1.5s", "ms", "5 m", "5M", "s5", "99999999999999999999s"])
    func rejects(text: String) {
        #expect(parseDuration(text) == nil)
    }
}

@Suite struct ListenAddressTests {
    @Test(arguments: [
        (":9435", nil, 9435),
        ("[::1]:9435", "::1", 9435),
        ("[::]:1", "::", 1),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
        ("[::ffff:127.0.0.1]:65535", "::ffff:127.0.0.1", 65535),
        ("127.0.0.1:9435", "127.0.0.1", 9435),
        ("localhost:9435", "localhost", 9435),
        ("exporter-1.example.org:80", "exporter-1.example.org", 80),
    ] as [(String, String?, UInt16)])
    func parses(text: String, host: String?, port: UInt16) throws {
        let address = try ListenAddress.parse(text)
        #expect(address == ListenAddress(host: host, port: port))
        #expect(address.description == text)
    }

    @Test(arguments: [
        "9435", "", ":", "localhost", "localhost:", ":0", ":65536", ":-1", ":http", ":94 35",
        "::1:9435", "[::1]", "[::1]9435", "[]:9435", "[127.0.0.1]:80", "[::1:80", "[zz::1]:80",
        "host name:80", "a..b:80", ".:80", "[fe80::1%]:80",
    ])
    func rejects(text: String) {
        #expect(throws: ListenAddressError.self) { try ListenAddress.parse(text) }
    }
}
