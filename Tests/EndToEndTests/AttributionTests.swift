import Foundation
import Glibc
import TCPTopCore
import Testing

/// The attribution labels with real cgroups, users and roles, through the
/// real daemon and BPF: peers placed in hand-made cgroup v2 directories
/// (a "unit" and a docker-like scope) and run as other users show those
/// paths, units, containers, uids and names on series with their exact
/// bytes; every shaped view, capped or not, sums exactly to the
/// per-connection view, family by family.
@Suite(.serialized, .enabled(if: runningAsRoot && cgroup2Mount != nil, "needs root, BPF and a cgroup v2 mount"))
struct AttributionTests {
    static let shapedLabels = "[unit, cgroup, container, uid, user, role, remote_network, lport, rport]"

    /// Every plan this kernel allows: each read path carries the cgroup id and uid its own way.
    @Test(arguments: KernelPlans.allowed)
    func realCgroupsUsersAndRolesLabelExactBytesAndShapedViewsSumExactly(plan: KernelPlans.Combination) throws {
        // A retention past the test: a per-connection series that went would
        // leave the shaped views' sums (which keep closed ends) ahead of it.
        let config = try writeConfig("""
            bpf: {attach_mode: \(plan.hooks.configValue.rawValue), read_path: \(plan.readPath.configValue.rawValue)}
            connections: {closed_retention: 1h}
            networks:
              loopback: ["127.0.0.0/8", "::1/128"]
            views:
              - {prefix: tt_conn, labels: [pid, comm, family, laddr, lport, raddr, rport]}
              - {prefix: tt_shaped, labels: \(Self.shapedLabels), ephemeral_client_port: true}
              - {prefix: tt_capped, labels: \(Self.shapedLabels), ephemeral_client_port: true, max_series: 1}

            """)
        defer { unlink(config) }
        let cgroups = try TestCgroups(mount: cgroup2Mount!)
        defer { cgroups.remove() }
        let service = try cgroups.make("sub.service")
        let server = try cgroups.make("srv.service")
        let containerID = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let scope = try cgroups.make("docker-\(containerID).scope")
        // A uid without a name: the user label is the number.
        let unnamed: UInt32 = 54321
        try #require(getpwuid(unnamed) == nil, "uid \(unnamed) has a name on this host")
        let script = try TestCgroups.readableCopy(of: TrafficPeers.script)
        defer { unlink(script) }

        let daemon = try ExporterProcess(arguments: ["--config.file=\(config)"])
        try daemon.waitReady()
        // IPv4: the client is nobody in sub.service; IPv6: uid 54321 in the docker scope.
        let v4 = try TrafficPeers.exchange(
            family: "4", clientName: "tt-attr-c4", serverName: "tt-attr-s4", clientSends: 1_000_003, serverSends: 4321,
            seed: 11, clientLauncher: cgroups.launcher(service, uid: 65534), serverLauncher: cgroups.launcher(server),
            script: script)
        let v6 = try TrafficPeers.exchange(
            family: "6", clientName: "tt-attr-c6", serverName: "tt-attr-s6", clientSends: 77, serverSends: 654_321,
            seed: 12, clientLauncher: cgroups.launcher(scope, uid: unnamed), serverLauncher: cgroups.launcher(server),
            script: script)

        let ends: [(exchange: TrafficPeers.Exchange, client: [String: String])] = [
            (v4, ["cgroup": service, "unit": "sub.service", "container": "", "uid": "65534", "user": "nobody"]),
            (v6, ["cgroup": scope, "unit": "docker-\(containerID).scope", "container": containerID,
                  "uid": "\(unnamed)", "user": "\(unnamed)"]),
        ]
        // Each shaped series of ours: all nine labels, so that it is this end's alone.
        func shaped(_ exchange: TrafficPeers.Exchange, client: [String: String]) -> (client: [String: String], server: [String: String]) {
            let network = ["remote_network": "loopback"]
            return (client.merging(network) { $1 }.merging(
                        ["role": "client", "lport": "ephemeral", "rport": "\(exchange.serverPort)"]) { $1 },
                    network.merging(["cgroup": server, "unit": "srv.service", "container": "", "uid": "0", "user": "root",
                                     "role": "server", "lport": "\(exchange.serverPort)", "rport": "ephemeral"]) { $1 })
        }
        func exact(_ samples: [ParsedSample], _ name: String, _ labels: [String: String]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
        // Both exchanges ended before the scrape: a read or two takes their final counts.
        try daemon.waitForMetrics("both exchanges' exact bytes in the shaped view", timeout: 10) { samples in
            ends.allSatisfy { end in
                let (client, server) = shaped(end.exchange, client: end.client)
                return exact(samples, "tt_shaped_sent_bytes_total", client) == Double(end.exchange.clientSent)
                    && exact(samples, "tt_shaped_sent_bytes_total", server) == Double(end.exchange.serverSent)
            }
        }
        // One scrape for every check below: the views are rendered from one read.
        let body = try daemon.get().body
        let scrape = try ExpositionParser.parse(String(decoding: body, as: UTF8.self))
        for (exchange, clientLabels) in ends {
            let (client, server) = shaped(exchange, client: clientLabels)
            #expect(exact(scrape, "tt_shaped_sent_bytes_total", client) == Double(exchange.clientSent), "\(client)")
            #expect(exact(scrape, "tt_shaped_received_bytes_total", client) == Double(exchange.serverSent), "\(client)")
            #expect(exact(scrape, "tt_shaped_sent_bytes_total", server) == Double(exchange.serverSent), "\(server)")
            #expect(exact(scrape, "tt_shaped_received_bytes_total", server) == Double(exchange.clientSent), "\(server)")
            // A view that keeps the role label has no second one on connections_opened_total.
            #expect(exact(scrape, "tt_shaped_connections_opened_total", client) == 1, "\(client)")
            #expect(exact(scrape, "tt_shaped_connections_opened_total", server) == 1, "\(server)")
            // The same bytes on the per-connection view's series of the same ends.
            #expect(value(scrape, "tt_conn_sent_bytes_total",
                          ["pid": "\(exchange.clientPID)", "comm": exchange.clientName, "rport": "\(exchange.serverPort)"])
                    == Double(exchange.clientSent))
            #expect(value(scrape, "tt_conn_sent_bytes_total",
                          ["pid": "\(exchange.serverPID)", "comm": exchange.serverName, "lport": "\(exchange.serverPort)"])
                    == Double(exchange.serverSent))
        }

        // Every counter family of each shaped view sums to the per-connection view's.
        var sums: [String: [String: Double]] = [:]  // family -> prefix -> sum
        let prefixes = ["tt_conn", "tt_shaped", "tt_capped"]
        for sample in scrape where sample.name.hasSuffix("_total") {
            guard let prefix = prefixes.first(where: { sample.name.hasPrefix($0 + "_") }) else { continue }
            sums[String(sample.name.dropFirst(prefix.count + 1)), default: [:]][prefix, default: 0] += sample.value
        }
        for family in ["sent_bytes_total", "received_bytes_total", "connections_opened_total"] {
            #expect((sums[family]?["tt_conn"] ?? 0) > 0, "\(family): \(sums[family] ?? [:])")
        }
        for (family, byView) in sums.sorted(by: { $0.key < $1.key }) {
            let perConnection = byView["tt_conn"] ?? 0
            #expect(byView["tt_shaped"] ?? 0 == perConnection, "\(family): \(byView)")
            #expect(byView["tt_capped"] ?? 0 == perConnection, "\(family): \(byView)")
        }
        // max_series: 1 with many label sets: one own series and the overflow one.
        let capped = scrape.filter { $0.name == "tt_capped_sent_bytes_total" }
        #expect(capped.count == 2 && capped.contains { $0.labels["unit"] == "__overflow__" }, "\(capped)")
        try expectPromtoolAccepts(body)

        let shown = scrape.filter { sample in
            sample.name == "tt_shaped_sent_bytes_total"
                && ends.contains { "\($0.exchange.serverPort)" == sample.labels["lport"] || "\($0.exchange.serverPort)" == sample.labels["rport"] }
        }
        print("attribution (\(plan)): \(shown.count) shaped series of ours; "
              + "sent bytes in all: per connection \(sums["sent_bytes_total"]?["tt_conn"] ?? -1), "
              + "shaped \(sums["sent_bytes_total"]?["tt_shaped"] ?? -1), capped \(sums["sent_bytes_total"]?["tt_capped"] ?? -1)")
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n")
        where line.hasPrefix("tt_shaped_sent_bytes_total{") && (line.contains(containerID) || line.contains("sub.service")) {
            print("  \(line)")
        }
    }
}

/// Cgroup v2 directories made for one test, under
/// `<mount>/tcptop-test-<pid>-attr<n>`; `remove()` takes them away again,
/// moving any process still in one (a peer a failed test left) back to the
/// test's own cgroup first, so that each rmdir can succeed.
final class TestCgroups {
    let mount: String
    /// The test's parent directory, relative to the mount ("/tcptop-test-...").
    let root: String
    private var made: [String] = []

    init(mount: String) throws {
        self.mount = mount
        root = "/tcptop-test-\(getpid())-attr\(UInt32.random(in: 0...UInt32.max))"
        try makeDirectory(root)
    }

    deinit { remove() }

    /// Makes `<root>/<name>`; returns its path relative to the mount, as /proc/PID/cgroup writes it.
    func make(_ name: String) throws -> String {
        try makeDirectory(root + "/" + name)
        return root + "/" + name
    }

    private func makeDirectory(_ path: String) throws {
        guard mkdir(mount + path, 0o755) == 0 else {
            throw PeerError(description: "mkdir \(mount + path): \(String(cString: strerror(errno)))")
        }
        made.append(path)
    }

    /// A launcher (see LinePeer) that moves the process into `cgroup`
    /// before it runs anything, then, with `uid`, becomes that user (and
    /// group) with no supplementary groups.
    func launcher(_ cgroup: String, uid: UInt32? = nil) -> [String] {
        ["/bin/sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", mount + cgroup + "/cgroup.procs"]
            + (uid.map { ["/usr/bin/setpriv", "--reuid=\($0)", "--regid=\($0)", "--clear-groups", "--"] } ?? [])
    }

    /// Removes every directory made, deepest first; bounded (2 s each).
    func remove() {
        let home = Self.ownCgroup()
        while let path = made.popLast() {
            let deadline = Date().addingTimeInterval(2)
            while rmdir(mount + path) != 0 && errno != ENOENT && Date() < deadline {
                let procs = (try? String(contentsOfFile: mount + path + "/cgroup.procs", encoding: .utf8)) ?? ""
                for pid in procs.split(separator: "\n") {
                    try? "\(pid)\n".write(toFile: mount + (home == "/" ? "" : home) + "/cgroup.procs", atomically: false, encoding: .utf8)
                }
                usleep(20_000)
            }
        }
    }

    /// This process's cgroup v2 path (the "0::" line of /proc/self/cgroup), "/" if none.
    static func ownCgroup() -> String {
        let text = FileHandle(forReadingAtPath: "/proc/self/cgroup").map { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self) } ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) } ?? "/"
    }

    /// A copy of `file` that any user can read (the checkout may be in a
    /// directory only root can enter).
    static func readableCopy(of file: String) throws -> String {
        let copy = "/tmp/tcptop-peer-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).py"
        unlink(copy)
        try FileManager.default.copyItem(atPath: file, toPath: copy)
        guard chmod(copy, 0o644) == 0 else { throw PeerError(description: "chmod \(copy): \(String(cString: strerror(errno)))") }
        return copy
    }
}
