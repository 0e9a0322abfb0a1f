import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore

/// Figure 3: what one /metrics request costs with many connection series.
/// Real loopback connections against the daemon where the machine allows,
/// then a synthetic feed of the same registry and renderer, each size in a
/// child process so its peak RSS is its own.
enum ScrapeFigure {
    static func run(_ settings: Settings) -> [Row] {
        var rows: [Row] = []
        raiseOpenFileLimit(to: 65536)
        for series in settings.realSeries {
            do {
                rows.append(try real(series: series, scrapes: settings.rounds))
            } catch {
                rows.append(Row.failed("3 scrape \(formatCount(series)) real", error))
            }
        }
        var perSeries: [Int: Double] = [:]
        for series in settings.syntheticSeries {
            do {
                let result = try synthetic(series: series)
                perSeries[series] = result.seconds / Double(series)
                rows.append(result.row)
            } catch {
                rows.append(Row.failed("3 scrape \(formatCount(series)) synthetic", error))
            }
        }
        // The largest again with the shipped views (the per-unit view beside
        // the per-connection one, its labels resolved for every new end).
        if let largest = settings.syntheticSeries.last {
            do {
                rows.append(try synthetic(series: largest, shipped: true).row)
            } catch {
                rows.append(Row.failed("3 scrape \(formatCount(largest)) synthetic, shipped views", error))
            }
        }
        // Time per series should stay flat as the series multiply; each step is shown.
        let sizes = settings.syntheticSeries.filter { perSeries[$0] != nil }
        if let small = sizes.first, let large = sizes.last, small < large {
            let growth = perSeries[large]! / perSeries[small]!
            let steps = zip(sizes, sizes.dropFirst()).map { from, to in
                "×\(format(perSeries[to]! / perSeries[from]!, 2)) \(formatCount(from))→\(formatCount(to))"
            }
            rows.append(Row(
                figure: "3 growth \(formatCount(small))→\(formatCount(large)) synthetic",
                measured: "time ×\(format(growth * Double(large) / Double(small), 0)) for ×\(large / small) series; per series ×\(format(growth, 2)) (\(steps.joined(separator: ", ")))",
                target: "linear: per series ×≤ 2", met: growth <= 2))
        }
        return rows
    }

    // MARK: Real connections

    /// `series` connection ends (series/2 loopback connections, 1 byte each
    /// way so both ends are counted), held open while the daemon is scraped.
    private static func real(series: Int, scrapes: Int) throws -> Row {
        let daemon = try DaemonUnderTest()
        // A second tracer, in this process, to time the kernel-map read alone.
        let tracer = try TCPTracer.start(.init())
        let (listener, port) = try Loopback.listen()
        var fds: [Int32] = []
        defer {
            for fd in fds { close(fd) }
            close(listener)
        }
        var byte: UInt8 = 1
        for _ in 0..<series / 2 {
            let (client, server) = try Loopback.pair(listener: listener, port: port)
            fds += [client, server]
            guard send(client, &byte, 1, 0) == 1, send(server, &byte, 1, 0) == 1 else {
                throw BenchError("send: \(errnoText())")
            }
        }

        let first = try daemon.timedScrape()  // inserts every connection into the registry
        let seen = countSeries(first.body)
        guard seen >= series else { throw BenchError("the daemon served \(seen) series, expected ≥ \(series)") }
        // Per scrape: how far RSS rises above where it was before the request.
        var times: [Double] = []
        var scrapeGrowth: UInt64?
        for _ in 0..<scrapes {
            let before = daemon.restingRSS
            let reset = daemon.resetPeakRSS()
            times.append(try daemon.timedScrape().seconds)
            if reset { scrapeGrowth = max(scrapeGrowth ?? 0, daemon.peakRSS &- min(before, daemon.peakRSS)) }
        }
        var reads: [Double] = []
        for _ in 0..<scrapes {
            let start = now()
            _ = try tracer.read()
            reads.append(now() - start)
        }
        let peak = daemon.peakRSS
        daemon.stop()
        return Row(
            figure: "3 scrape \(formatCount(series)) real (\(series / 2) conns)",
            measured: "\(formatSeconds(median(times))) (first \(formatSeconds(first.seconds)); kernel read \(formatSeconds(median(reads)))), peak RSS \(formatBytes(peak)) (a scrape +\(scrapeGrowth.map(formatBytes) ?? "?")), \(format(Double(first.body.count) / 1_048_576)) MiB text")
    }

    /// Samples of the default view's family, the daemon's own metrics aside.
    private static func countSeries(_ body: [UInt8]) -> Int {
        let prefix = Array("tcptop_sent_bytes_total{".utf8)
        var count = 0
        var lineStart = true
        for index in body.indices {
            if lineStart && body[index] == prefix[0] && body[index...].starts(with: prefix) { count += 1 }
            lineStart = body[index] == UInt8(ascii: "\n")
        }
        return count
    }

    // MARK: Synthetic feed

    /// Runs `tcptop-bench --synthetic-scrape N` and reads its one result line.
    private static func synthetic(series: Int, shipped: Bool = false) throws -> (row: Row, seconds: Double) {
        let child = Process()
        let output = Pipe()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        child.arguments = ["--synthetic-scrape", "\(series)"] + (shipped ? ["shipped"] : [])
        child.standardOutput = output
        try child.run()
        Cleanup.shared.track(child.processIdentifier)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        child.waitUntilExit()
        Cleanup.shared.untrack(child.processIdentifier)
        var fields: [String: Double] = [:]
        for pair in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace) {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let value = Double(parts[1]) { fields[String(parts[0])] = value }
        }
        guard child.terminationStatus == 0, let scrape = fields["scrape"], let first = fields["first"],
            let peak = fields["hwm"], let text = fields["bytes"]
        else { throw BenchError("synthetic child for \(series) failed (status \(child.terminationStatus))") }

        var target = "—"
        var met: Bool?
        let peakBytes = UInt64(peak)
        if shipped {
            target = "—"
        } else if series == 100_000 {
            target = "≤ 50 ms, ≤ 80 MB"
            met = scrape <= 0.05 && peakBytes <= 80_000_000
        } else if series == 1_000_000 {
            target = "≤ 300 ms, first ≤ 1 s, ≤ 300 MB"
            met = scrape <= 0.3 && first <= 1 && peakBytes <= 300_000_000
        }
        let row = Row(
            figure: "3 scrape \(formatCount(series)) synthetic (update+render)\(shipped ? ", shipped views" : "")",
            measured: "\(formatSeconds(scrape)) (first \(formatSeconds(first))), peak RSS \(formatBytes(peakBytes)), \(format(text / 1_048_576)) MiB text",
            target: target, met: met)
        return (row, scrape)
    }

    /// The child's side: the registry and renderer the daemon uses, fed N
    /// made-up connection ends; prints one line of key=value results.
    /// `shipped`: the shipped views (the per-connection one uncapped), every
    /// end in this process's cgroup, as root.
    static func syntheticChild(series: Int, rounds: Int, shipped: Bool = false) {
        var samples = makeSamples(series)
        let retention = ExporterConfig().connections.closedRetention.inSeconds
        // No series cap: the figure measures the registry at 1M series.
        let registry = shipped
            ? ConnectionRegistry(views: [ViewConfig(), ViewConfig.shippedByUnit], closedRetention: retention, networks: NamedNetwork.shipped)
            : ConnectionRegistry(views: [ViewConfig()], closedRetention: retention)
        if shipped, let cgroup = AttributionNames.cgroupID(ofProcess: UInt32(getpid())) {
            for index in samples.indices {
                samples[index].labels.cgroupID = cgroup
                samples[index].labels.uid = 0
            }
        }
        var clock = 1.0
        // As the daemon does: update and snapshot (under its lock), then the
        // snapshot streamed in 64 KiB pieces to a sink that counts them, as
        // a socket would take them.
        var textBytes = 0
        func scrape() {
            registry.update(with: samples, now: clock)
            let snapshot = registry.snapshot()
            textBytes = 0
            snapshot.write { textBytes += $0.count }
        }
        // The first scrape also inserts every connection end.
        let first = timed(scrape)

        // Each scrape re-reads every connection (counters moved) and renders.
        var times: [Double] = []
        for _ in 0..<rounds {
            for index in samples.indices { samples[index].sentBytes += 1 }
            clock += 1
            times.append(timed(scrape))
        }
        let peak = statusBytes(pid: getpid(), field: "VmHWM") ?? 0
        print("scrape=\(median(times)) first=\(first) hwm=\(peak) bytes=\(textBytes)")
    }

    private static func timed(_ body: () -> Void) -> Double {
        let start = now()
        body()
        return now() - start
    }

    /// Realistic labels: a few dozen processes, three in four ends IPv4,
    /// distinct remote addresses (so every end is its own series).
    private static func makeSamples(_ count: Int) -> [ConnectionSample] {
        // One array per process name, as the tracer shares them.
        let names = ["nginx", "postgres", "java", "python3", "node", "envoy", "redis-server", "curl"].map { Array($0.utf8) }
        // Seeded: the input is the same each run (and made without a syscall per number).
        var generator = SeededNumbers(state: UInt64(count))
        return (0..<count).map { index in
            let pid = UInt32(1000 + index % 48)
            let ipv4 = index % 4 != 3
            let local: [UInt8] = ipv4 ? [10, 0, 0, UInt8(1 + index % 4)] : [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
            let n = UInt32(index)
            let remote: [UInt8] = ipv4
                ? [172, UInt8(16 + (n >> 16) & 0x0f), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
                : [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, UInt8.random(in: 0...255, using: &generator), 0,
                   UInt8((n >> 24) & 0xff), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
            let family: AddressFamily = ipv4 ? .ipv4 : .ipv6
            let labels = ConnectionLabels(
                pid: pid, comm: names[index % names.count], family: family,
                localAddress: addressText(family: family, bytes: local), localPort: UInt16.random(in: 32768...60999, using: &generator),
                remoteAddress: addressText(family: family, bytes: remote), remotePort: [443, 5432, 6379, 8080][index % 4])
            return ConnectionSample(
                id: ConnectionID(cookie: UInt64(index + 1), pid: pid), labels: labels,
                sentBytes: UInt64.random(in: 1...1 << 30, using: &generator), receivedBytes: UInt64.random(in: 1...1 << 30, using: &generator), closed: false,
                // Health as the tracer fills it: one end in eight retransmitted, every RTT known.
                retransmittedSegments: index % 8 == 0 ? UInt64.random(in: 1...50, using: &generator) : 0,
                smoothedRTTMicroseconds: UInt32.random(in: 20...200_000, using: &generator))
        }
    }
}

/// SplitMix64.
struct SeededNumbers: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
