import Foundation
import Testing
@testable import TCPTopCore

@Suite struct CgroupPathTests {
    @Test(arguments: [
        ("/system.slice/nginx.service", "nginx.service", ""),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", ""),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "foo.service", ""),
        ("/system.slice/nginx.service/worker", "nginx.service", ""),
        ("/system.slice/docker-\(String(repeating: "ab12", count: 16)).scope", "docker-\(String(repeating: "ab12", count: 16)).scope",
         String(repeating: "ab12", count: 16)),
        ("/docker/\(String(repeating: "0f", count: 32))", "", String(repeating: "0f", count: 32)),
        ("/kubepods.slice/kubepods-pod1.slice/cri-containerd-\(String(repeating: "9", count: 64)).scope",
         "cri-containerd-\(String(repeating: "9", count: 64)).scope", String(repeating: "9", count: 64)),
        ("/machine.slice/libpod-\(String(repeating: "c", count: 64)).scope/container", "libpod-\(String(repeating: "c", count: 64)).scope",
         String(repeating: "c", count: 64)),
        ("/machine.slice/libpod-conmon-\(String(repeating: "c", count: 64)).scope", "libpod-conmon-\(String(repeating: "c", count: 64)).scope", ""),
        ("/machine.slice/systemd-nspawn@web\\x2d1.service/payload/system.slice/nginx.service", "nginx.service", "web-1"),
        ("/machine.slice/machine-db.scope/payload", "machine-db.scope", "db"),
        ("/lxc.payload.box1/system.slice/cron.service", "cron.service", "box1"),
        ("/tcptop-test/mine", "", ""),
        ("/", "", ""),
        ("", "", ""),
    ])
    func unitAndContainerFromThePath(path: String, unit: String, container: String) {
        let attribution = CgroupAttribution(path: path)
        #expect(attribution.path == path)
        #expect(attribution.unit == unit)
        #expect(attribution.container == container)
    }

    /// The real tree: the mount's root directory is the cgroup "/", found by its inode, and a
    /// cgroup made here is found by its id (walked), then gone ids are unknown, not wrong.
    @Test func idsResolveThroughTheRealTree() throws {
        let names = AttributionNames()
        let mount = try #require(names.cgroupMount, "no cgroup2 mount on this host")
        let rootID = try #require(AttributionNames.inode(of: mount))
        #expect(names.cgroup(id: rootID, pid: 0).path == "/")
        let directory = mount + "/tcptop-attribution-\(getpid())"
        try #require(mkdir(directory, 0o755) == 0, "mkdir \(directory): \(String(cString: strerror(errno)))")
        let sub = directory + "/probe.service"
        try #require(mkdir(sub, 0o755) == 0)
        let id = try #require(AttributionNames.inode(of: sub))
        rmdir(sub)
        rmdir(directory)
        names.beginRead()
        // Gone before it was looked up: unknown.
        #expect(names.cgroup(id: id, pid: 0) == CgroupAttribution(path: ""))

        try #require(mkdir(directory, 0o755) == 0)
        try #require(mkdir(sub, 0o755) == 0)
        defer { rmdir(sub); rmdir(directory) }
        let liveID = try #require(AttributionNames.inode(of: sub))
        names.beginRead()
        let found = names.cgroup(id: liveID, pid: 0)
        #expect(found.path == "/tcptop-attribution-\(getpid())/probe.service")
        #expect(found.unit == "probe.service")
        #expect(names.cgroup(id: 0, pid: 0).path == "")
    }

    @Test func userNamesFromTheUserDatabase() {
        let names = AttributionNames(cgroupMount: nil)
        #expect(names.userName(uid: 0) == "root")
        #expect(names.userName(uid: 4_000_000_000) == "4000000000")  // no such user: the number
        #expect(names.userName(uid: ConnectionLabels.unknownUID) == "")
    }
}

@Suite struct RemoteNetworkTests {
    @Test func narrowestPrefixWins() throws {
        let networks = [
            NamedNetwork(name: "internet", prefixes: [try IPPrefix.parse("0.0.0.0/0").get(), try IPPrefix.parse("::/0").get()]),
            NamedNetwork(name: "private", prefixes: [try IPPrefix.parse("10.0.0.0/8").get()]),
            NamedNetwork(name: "db", prefixes: [try IPPrefix.parse("10.2.0.0/16").get(), try IPPrefix.parse("fd00:db::/32").get()]),
        ]
        let names = RemoteNetworkNames(networks)
        #expect(names.name(of: "10.2.3.4") == "db")
        #expect(names.name(of: "10.3.3.4") == "private")
        #expect(names.name(of: "8.8.8.8") == "internet")
        #expect(names.name(of: "fd00:db::5") == "db")
        #expect(names.name(of: "2001:db8::1") == "internet")
        #expect(names.name(of: "::ffff:10.2.0.9") == "db")  // a dual-stack socket's IPv4 peer
        #expect(RemoteNetworkNames([networks[1]]).name(of: "192.168.1.1") == RemoteNetworkNames.other)
    }

    @Test(arguments: [
        ("10.0.0.0", "must be an address prefix like 10.0.0.0/8 or fc00::/7, got \"10.0.0.0\""),
        ("10.0.0.0/33", "the prefix length of \"10.0.0.0/33\" must be 0 to 32"),
        ("10.2.3.4/16", "\"10.2.3.4/16\" has bits set past its /16: did you mean 10.2.0.0/16?"),
        ("fc00::1/7", "\"fc00::1/7\" has bits set past its /7: did you mean fc00::/7?"),
        ("db/8", "\"db\" in \"db/8\" is not an IPv4 or IPv6 address"),
        ("10.0.0.0/+8", "must be an address prefix like 10.0.0.0/8 or fc00::/7, got \"10.0.0.0/+8\""),
    ])
    func badPrefixesAreOneLine(text: String, problem: String) {
        guard case .failure(let error) = IPPrefix.parse(text) else {
            Issue.record("\(text) parsed")
            return
        }
        #expect(error.description == problem)
    }

    @Test func configTakesNetworksAndShapedViews() throws {
        let config = try ExporterConfig.parse(yaml: """
            networks:
              db: [10.2.0.0/16]
              internet: [0.0.0.0/0, "::/0"]
            views:
              - prefix: by_unit
                labels: [rport, remote_network, unit, role, lport]
                ephemeral_client_port: true
            """)
        #expect(config.networks.map(\.name) == ["db", "internet"])
        #expect(config.networks[1].prefixes.map(\.description) == ["0.0.0.0/0", "::/0"])
        #expect(config.views[0].labels == [.lport, .rport, .unit, .role, .remoteNetwork])
        #expect(config.views[0].ephemeralClientPort)
    }

    @Test(arguments: [
        ("networks: [10.0.0.0/8]", "config: networks: must be a mapping of network names to lists of address prefixes, got a list"),
        ("networks: {db: 10.0.0.0/8}", "config: networks.db: must be a list of address prefixes like [10.0.0.0/8, fc00::/7], got \"10.0.0.0/8\""),
        ("networks: {db: []}", "config: networks.db: must list at least one address prefix"),
        ("networks: {db: [10.0.0.0/8], lan: [10.0.0.0/8]}", "config: networks.lan[0]: 10.0.0.0/8 is already in network \"db\""),
        ("networks: {db: [10.1.0.0/8]}", "config: networks.db[0]: \"10.1.0.0/8\" has bits set past its /8: did you mean 10.0.0.0/8?"),
        ("views: [{ephemeral_client_port: yes please}]", "config: views[0].ephemeral_client_port: must be true or false, got \"yes please\""),
    ])
    func badNetworkConfigIsOneLine(yaml: String, message: String) {
        #expect(throws: ConfigError.self) { try ExporterConfig.parse(yaml: yaml) }
        do { _ = try ExporterConfig.parse(yaml: yaml) } catch { #expect("\(error)" == message) }
    }
}

@Suite struct ShapedViewTests {
    /// A client end (connected from an ephemeral port) and a server end.
    func end(cookie: UInt64, role: ConnectionLifecycle.Role, pid: UInt32, lport: UInt16, raddr: String, rport: UInt16,
             sent: UInt64, received: UInt64, uid: UInt32 = 0, closed: Bool = false) -> ConnectionSample {
        var end = sample(cookie: cookie, pid: pid, lport: lport, raddr: raddr, rport: rport, sent: sent, received: received, closed: closed)
        end.labels.uid = uid
        end.lifecycle = ConnectionLifecycle(role: role, established: role != .unknown)
        return end
    }

    let networks = [
        NamedNetwork(name: "loopback", prefixes: [try! IPPrefix.parse("127.0.0.0/8").get()]),
        NamedNetwork(name: "lan", prefixes: [try! IPPrefix.parse("10.0.0.0/8").get()]),
    ]

    @Test func ephemeralPortsMakeOneSeriesPerService() {
        let registry = ConnectionRegistry(
            views: [ViewConfig(prefix: "s", labels: [.lport, .rport, .role, .remoteNetwork], ephemeralClientPort: true)],
            closedRetention: 60, networks: networks)
        registry.update(with: [
            end(cookie: 1, role: .client, pid: 1, lport: 40001, raddr: "10.0.0.2", rport: 443, sent: 10, received: 100),
            end(cookie: 2, role: .client, pid: 1, lport: 40002, raddr: "10.0.0.3", rport: 443, sent: 20, received: 200),
            end(cookie: 3, role: .server, pid: 2, lport: 80, raddr: "127.0.0.1", rport: 50000, sent: 1000, received: 5),
            end(cookie: 4, role: .server, pid: 2, lport: 80, raddr: "127.0.0.1", rport: 50001, sent: 2000, received: 6),
            end(cookie: 5, role: .unknown, pid: 3, lport: 40003, raddr: "192.0.2.1", rport: 22, sent: 7, received: 8),
        ], now: 0)
        let values = renderedValues(registry)
        #expect(values == [
            #"s_sent_bytes_total{lport="ephemeral",rport="443",role="client",remote_network="lan"}"#: 30,
            #"s_received_bytes_total{lport="ephemeral",rport="443",role="client",remote_network="lan"}"#: 300,
            #"s_sent_bytes_total{lport="80",rport="ephemeral",role="server",remote_network="loopback"}"#: 3000,
            #"s_received_bytes_total{lport="80",rport="ephemeral",role="server",remote_network="loopback"}"#: 11,
            // Opened before the tracer: its role is unknown, both its ports stay.
            #"s_sent_bytes_total{lport="40003",rport="22",role="unknown",remote_network="other"}"#: 7,
            #"s_received_bytes_total{lport="40003",rport="22",role="unknown",remote_network="other"}"#: 8,
        ])
        // The view has the role label: connections_opened_total has no second one.
        let opened = renderedSamples(registry).filter { $0.key.hasPrefix("s_connections_opened_total") }
        #expect(opened == [
            #"s_connections_opened_total{lport="ephemeral",rport="443",role="client",remote_network="lan"}"#: "2",
            #"s_connections_opened_total{lport="80",rport="ephemeral",role="server",remote_network="loopback"}"#: "2",
        ])
    }

    @Test func uidAndUserLabels() {
        let registry = ConnectionRegistry(views: [ViewConfig(prefix: "u", labels: [.uid, .user])], closedRetention: 60,
                                          names: AttributionNames(cgroupMount: nil))
        var unknown = end(cookie: 3, role: .client, pid: 1, lport: 1, raddr: "10.0.0.1", rport: 2, sent: 5, received: 0)
        unknown.labels.uid = ConnectionLabels.unknownUID
        registry.update(with: [
            end(cookie: 1, role: .client, pid: 1, lport: 1, raddr: "10.0.0.1", rport: 2, sent: 1, received: 0, uid: 0),
            end(cookie: 2, role: .client, pid: 1, lport: 1, raddr: "10.0.0.1", rport: 3, sent: 2, received: 0, uid: 0),
            unknown,
        ], now: 0)
        let sent = renderedValues(registry).filter { $0.key.hasPrefix("u_sent") }
        #expect(sent == [#"u_sent_bytes_total{uid="0",user="root"}"#: 3, #"u_sent_bytes_total{uid="",user=""}"#: 5])
    }

    /// Shaped views (with overflow, too) sum to the per-connection view in
    /// every family, through random churn with closes (within the retention:
    /// past it, a per-connection series goes while its shaped one stays).
    @Test(arguments: [1 as UInt64, 2, 3])
    func everyShapedViewSumsExactly(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let shaped: [ViewConfig] = [
            ViewConfig(prefix: "conn"),
            ViewConfig(prefix: "svc", labels: [.role, .remoteNetwork, .lport, .rport], ephemeralClientPort: true),
            ViewConfig(prefix: "svc_capped", labels: [.role, .remoteNetwork, .lport, .rport], maxSeries: 2, ephemeralClientPort: true),
            ViewConfig(prefix: "who", labels: [.unit, .cgroup, .container, .uid, .user, .role]),
            ViewConfig(prefix: "net", labels: [.remoteNetwork], maxSeries: 1),
        ]
        let registry = ConnectionRegistry(views: shaped, closedRetention: 1000, networks: networks,
                                          names: AttributionNames(cgroupMount: nil))
        var open: [ConnectionSample] = []
        var cookie: UInt64 = 0
        for step in 0..<60 {
            // New ends, some closing at once; old ones move bytes or close.
            for _ in 0..<Int(random.next() % 6) {
                cookie += 1
                let role: ConnectionLifecycle.Role = [.client, .server, .unknown][Int(random.next() % 3)]
                let raddr = ["127.0.0.1", "10.1.2.3", "192.0.2.7"][Int(random.next() % 3)]
                open.append(end(cookie: cookie, role: role, pid: UInt32(1 + random.next() % 4),
                                lport: role == .server ? 80 : UInt16(40000 + random.next() % 500), raddr: raddr,
                                rport: role == .server ? UInt16(40000 + random.next() % 500) : 443,
                                sent: random.next() % 1000, received: random.next() % 1000, uid: UInt32(random.next() % 2)))
            }
            var read: [ConnectionSample] = []
            open = open.filter { end in
                var end = end
                end.sentBytes += random.next() % 100
                end.receivedBytes += random.next() % 100
                if random.next() % 5 == 0 {
                    end.closed = true
                    read.append(end)
                    return false
                }
                read.append(end)
                return true
            }
            open = read.filter { !$0.closed }
            registry.update(with: read, now: Double(step))
            let sums = familySums(registry)
            for prefix in ["svc", "svc_capped", "who", "net"] {
                for family in ["_sent_bytes_total", "_received_bytes_total", "_connections_opened_total", "_connections_established_total",
                               "_connections_closed_total"] {
                    #expect(sums[prefix + family, default: 0] == sums["conn" + family, default: 0], "\(prefix)\(family) at step \(step)")
                }
            }
        }
    }

    /// Each family's samples summed, by family name.
    func familySums(_ registry: ConnectionRegistry) -> [String: UInt64] {
        var sums: [String: UInt64] = [:]
        for (series, value) in renderedSamples(registry) {
            guard let number = UInt64(value) else { continue }
            sums[String(series.prefix { $0 != "{" }), default: 0] += number
        }
        return sums
    }
}
