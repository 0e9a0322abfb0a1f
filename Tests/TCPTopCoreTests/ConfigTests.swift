import TCPTopHTTP
import Foundation
import Testing
@testable import TCPTopCore

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
        #expect(config.views == [
            ViewConfig(prefix: "tcptop", labels: [.pid, .comm, .family, .laddr, .lport, .raddr, .rport], maxSeries: 100_000),
            ViewConfig(prefix: "tcptop_unit", labels: [.lport, .rport, .unit, .role, .remoteNetwork], maxSeries: 5000, ephemeralClientPort: true),
        ])
        #expect(config.networks.map { "\($0.name): \($0.prefixes.map(\.description))" } == [
            #"loopback: ["127.0.0.0/8", "::1/128"]"#, #"link_local: ["169.254.0.0/16", "fe80::/10"]"#,
            #"private: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]"#,
            #"internet: ["0.0.0.0/0", "::/0"]"#,
        ])
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
        for key in ["web", "listen_addresses", "telemetry_path", "max_requests", "max_connections", "read_timeout", "write_timeout",
                    "idle_timeout", "config_file", "bpf", "map_capacity", "attach_mode", "read_path", "connections", "closed_retention", "poll_interval",
                    "views", "prefix", "labels", "max_series", "connect_duration_buckets", "connection_duration_buckets",
                    "rtt_buckets", "ephemeral_client_port", "networks", "log", "level", "format"] {
            #expect(text.contains("\(key):"), "the shipped file does not document \(key)")
        }
    }

    @Test func viewsTakeHistogramBuckets() throws {
        let config = try ExporterConfig.parse(yaml: """
            views:
              - prefix: a
                connect_duration_buckets: [0.001, 0.01, 0.1, 1, 3]
                connection_duration_buckets: [1, 10, 60, 600, 3600]
                rtt_buckets: [0.000001, 0.0005, 1e9]
              - prefix: b
            """)
        #expect(config.views[0].connectDurationBuckets == [0.001, 0.01, 0.1, 1, 3])
        #expect(config.views[0].connectionDurationBuckets == [1, 10, 60, 600, 3600])
        #expect(config.views[0].rttBuckets == [0.000001, 0.0005, 1e9])
        #expect(config.views[1] == ViewConfig(prefix: "b"))
        let thirty = (1...30).map { "\($0)" }.joined(separator: ", ")
        #expect(try ExporterConfig.parse(yaml: "views: [{rtt_buckets: [\(thirty)]}]").views[0].rttBuckets?.count == 30)
    }

    @Test func parsesEveryKey() throws {
        let config = try ExporterConfig.parse(yaml: """
            web:
              listen_addresses: ["[::1]:9100", "127.0.0.1:9101", "localhost:9102"]
              telemetry_path: /tcp
              max_requests: 3
              max_connections: 20000
              read_timeout: 500ms
              write_timeout: 1m30s
              idle_timeout: 5m
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
        #expect(config.web.maxConnections == 20000)
        #expect(config.web.idleTimeout == .seconds(300))
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
         "config: webb: unknown key (known keys here: web, bpf, connections, views, networks, log)"),
        ("web: {listen_address: ':1'}",
         "config: web.listen_address: unknown key (known keys here: listen_addresses, telemetry_path, max_requests, max_connections, read_timeout, write_timeout, idle_timeout, config_file)"),
        ("web: [1]",
         "config: web: must be a mapping with keys listen_addresses, telemetry_path, max_requests, max_connections, read_timeout, write_timeout, idle_timeout, config_file, got a list"),
        ("[1, 2]",
         "config: must be a mapping with keys web, bpf, connections, views, networks, log, got a list"),
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
        ("web: {max_connections: 0}",
         #"config: web.max_connections: must be an integer between 1 and 1000000, got "0""#),
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
         #"config: views[0].labels[1]: must be one of pid, comm, family, laddr, lport, raddr, rport, unit, cgroup, container, uid, user, role, remote_network, got "port""#),
        ("views: [{labels: [pid, comm, pid]}]",
         #"config: views[0].labels[2]: "pid" is listed twice"#),
        ("views: [{max_series: -1}]",
         #"config: views[0].max_series: must be an integer between 0 and 2147483647 (0 = no limit), got "-1""#),
        ("views: [{size: 1}]",
         "config: views[0].size: unknown key (known keys here: prefix, labels, max_series, connect_duration_buckets, connection_duration_buckets, rtt_buckets, ephemeral_client_port)"),
        ("views: [{connect_duration_buckets: [0.1, 0.05]}]",
         "config: views[0].connect_duration_buckets: bounds must be strictly increasing, got 0.05 after 0.1 at [1]"),
        ("views: [{connection_duration_buckets: [1, 1]}]",
         "config: views[0].connection_duration_buckets: bounds must be strictly increasing, got 1.0 after 1.0 at [1]"),
        ("views: [{rtt_buckets: [0]}]",
         "config: views[0].rtt_buckets: bounds must be seconds from 0.000001 to 1e9, got 0.0 at [0]"),
        ("views: [{rtt_buckets: [-1, 1]}]",
         "config: views[0].rtt_buckets: bounds must be seconds from 0.000001 to 1e9, got -1.0 at [0]"),
        ("views: [{rtt_buckets: [0.01, .inf]}]",
         #"config: views[0].rtt_buckets[1]: must be a number of seconds, got ".inf""#),
        ("views: [{rtt_buckets: [0.01, 10ms]}]",
         #"config: views[0].rtt_buckets[1]: must be a number of seconds, got "10ms""#),
        ("views: [{rtt_buckets: []}]",
         "config: views[0].rtt_buckets: must list at least one upper bound"),
        ("views: [{rtt_buckets: 0.1}]",
         #"config: views[0].rtt_buckets: must be a list of upper bounds in seconds, like [0.001, 0.01, 0.1, 1], got "0.1""#),
        ("views: [{rtt_buckets: [[1]]}]",
         "config: views[0].rtt_buckets[0]: must be a number of seconds, got a list"),
        ("views: [{connect_duration_buckets: [\((1...31).map { "\($0)" }.joined(separator: ", "))]}]",
         "config: views[0].connect_duration_buckets: must list at most 30 upper bounds, got 31"),
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

    /// Each duration feeds a timer or a deadline: past its bound it is one line, never a trap later.
    @Test(arguments: [
        ("connections: {poll_interval: 1000y}", "connections.poll_interval", "1h", "1000y"),
        ("connections: {poll_interval: 9999999999999h}", "connections.poll_interval", "1h", "9999999999999h"),
        ("connections: {poll_interval: 1h1ms}", "connections.poll_interval", "1h", "1h1ms"),
        ("connections: {poll_interval: 99999999999999999999s}", "connections.poll_interval", "1h", "99999999999999999999s"),
        ("connections: {poll_interval: 292y}", "connections.poll_interval", "1h", "292y"),
        ("connections: {closed_retention: 1000y}", "connections.closed_retention", "1w", "1000y"),
        ("connections: {closed_retention: 1w1ms}", "connections.closed_retention", "1w", "1w1ms"),
        ("connections: {closed_retention: 9999999999999h}", "connections.closed_retention", "1w", "9999999999999h"),
        ("connections: {closed_retention: 106751991167300d}", "connections.closed_retention", "1w", "106751991167300d"),
        ("web: {read_timeout: 1000y}", "web.read_timeout", "1h", "1000y"),
        ("web: {idle_timeout: 2h}", "web.idle_timeout", "1h", "2h"),
        ("web: {read_timeout: 9223372036854775807ms}", "web.read_timeout", "1h", "9223372036854775807ms"),
        ("web: {read_timeout: 9999999999999h}", "web.read_timeout", "1h", "9999999999999h"),
        ("web: {write_timeout: 1000y}", "web.write_timeout", "1h", "1000y"),
        ("web: {write_timeout: 2h}", "web.write_timeout", "1h", "2h"),
        ("web: {write_timeout: 1y2w3d4h5m6s7ms}", "web.write_timeout", "1h", "1y2w3d4h5m6s7ms"),
    ] as [(String, String, String, String)])
    func durationPastItsBoundGivesOneLine(yaml: String, key: String, bound: String, text: String) {
        #expect {
            try ExporterConfig.parse(yaml: yaml)
        } throws: { error in
            "\(error)" == "config: \(key): must be at most \(bound), got \"\(text)\""
        }
    }

    @Test func durationsAtTheirBoundAreTaken() throws {
        let config = try ExporterConfig.parse(yaml: """
            web: {read_timeout: 1h, write_timeout: 60m}
            connections: {poll_interval: 3600s, closed_retention: 1w}
            """)
        #expect(config.web.readTimeout == .seconds(3600))
        #expect(config.web.writeTimeout == .seconds(3600))
        #expect(config.connections.pollInterval == .seconds(3600))
        #expect(config.connections.closedRetention == .seconds(7 * 86400))
        #expect(WebConfig.maxTimeout == .seconds(3600))
        #expect(ConnectionsConfig.maxPollInterval == .seconds(3600))
        #expect(ConnectionsConfig.maxClosedRetention == .seconds(604_800))
    }

    /// Found by the fuzzer (Tests/Fuzz): a value or key with a line break made a two-line error.
    @Test(arguments: [
        (#"web: {telemetry_path: "met\nrics"}"#, ##"config: web.telemetry_path: must be a path that starts with "/" and is not "/", without spaces, "?" or "#", got "met\nrics""##),
        ("'two\n\n  lines'", #"config: must be a mapping with keys web, bpf, connections, views, networks, log, got "two\nlines""#),
        (#"connections: {poll_interval: "1s\r\u001b[2J\u2028"}"#, #"config: connections.poll_interval: must be a duration like 500ms, 30s, 5m, 1h or 1m30s, got "1s\r\u{1B}[2J\u{2028}""#),
        (#"web: {"a\tb\u0085": 1}"#, #"config: web.a\tb\u{85}: unknown key (known keys here: listen_addresses, telemetry_path, max_requests, max_connections, read_timeout, write_timeout, idle_timeout, config_file)"#),
    ])
    func controlCharactersInTheFileStayOnOneLine(yaml: String, message: String) {
        #expect {
            try ExporterConfig.parse(yaml: yaml)
        } throws: { error in
            "\(error)" == message
        }
    }

    /// 10,000 nested "[" overflowed the stack in Yams (a segfault at start; a reload parses the same way).
    @Test(arguments: [
        "views: " + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000),
        String(repeating: "[", count: 51),
        String(repeating: "- ", count: 101) + "x",
        String(repeating: "{a: ", count: 40) + "1" + String(repeating: "}", count: 40),
        (0..<60).map { String(repeating: " ", count: $0) + "a:\n" }.joined(),
    ])
    func nestingPastTheBoundIsOneLine(yaml: String) {
        #expect {
            try ExporterConfig.parse(yaml: yaml)
        } throws: { error in
            "\(error)" == "config: invalid YAML: nested more than 100 levels deep"
        }
    }

    @Test func nestingBoundIsAboveTheRealDepthAndMissesComments() throws {
        #expect(nestingBound("views: [[]]") >= 3)
        #expect(nestingBound("- - - x") >= 3)
        #expect(nestingBound("a:\n  b:\n    c: 1\n") >= 3)
        // Separators in comments, dashes in values and balanced brackets do not add up.
        let commented = "# " + String(repeating: "-", count: 200) + "\nlog: {level: debug}  # a: b: c: - - -\n"
            + "views: [{prefix: a_b, labels: [pid]}]\n" + "web: {listen_addresses: [\"[::1]:9435\"]}\n"
        #expect(nestingBound(commented) < 20)
        #expect(try ExporterConfig.parse(yaml: commented).log.level == .debug)
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let shipped = try String(contentsOfFile: packageRoot.appendingPathComponent("Config/tcptop-exporter.yml").path, encoding: .utf8)
        #expect(nestingBound(shipped) < 20)
    }

    /// Sizes: every integer key refuses what its range does not hold, however long the digits.
    @Test(arguments: [
        ("web: {max_requests: 1000001}", "web.max_requests", "an integer between 1 and 1000000"),
        ("web: {max_requests: 99999999999999999999999}", "web.max_requests", "an integer between 1 and 1000000"),
        ("bpf: {map_capacity: 16777217}", "bpf.map_capacity", "an integer between 1 and 16777216"),
        ("bpf: {map_capacity: 0}", "bpf.map_capacity", "an integer between 1 and 16777216"),
        ("bpf: {map_capacity: 18446744073709551616}", "bpf.map_capacity", "an integer between 1 and 16777216"),
        ("views: [{max_series: 2147483648}]", "views[0].max_series", "an integer between 0 and 2147483647 (0 = no limit)"),
        ("views: [{max_series: 1e99}]", "views[0].max_series", "an integer between 0 and 2147483647 (0 = no limit)"),
    ] as [(String, String, String)])
    func sizePastItsBoundGivesOneLine(yaml: String, key: String, expected: String) throws {
        let error = try #require(throws: ConfigError.self) { try ExporterConfig.parse(yaml: yaml) }
        #expect(error.key == key)
        #expect(error.problem.hasPrefix("must be \(expected), got "))
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

    @Test(arguments: ["99999999999999999999s", "9999999999999h", "292471209y", "106751991167301d", "1y99999999999999999999ms",
                      "292471208y365d"])
    func tooLongIsToldApartFromInvalid(text: String) {
        #expect(readDuration(text) == .tooLong)
    }

    @Test(arguments: ["99999999999999999999x", "9999999999999h1h", "99999999999999999999s5"])
    func invalidAfterAnOverflowIsInvalid(text: String) {
        #expect(readDuration(text) == .invalid)
    }

    @Test func theLongestDurationIsRead() {
        #expect(readDuration("9223372036854775807ms") == .duration(.milliseconds(Int64.max)))
    }

    @Test(arguments: [
        (3_600_000, "1h"), (604_800_000, "1w"), (90_000, "1m30s"), (500, "500ms"), (0, "0"), (31_536_000_001, "1y1ms"),
    ] as [(Int64, String)])
    func durationTextRoundTrips(milliseconds: Int64, text: String) {
        #expect(durationText(.milliseconds(milliseconds)) == text)
        #expect(parseDuration(text) == .milliseconds(milliseconds))
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
