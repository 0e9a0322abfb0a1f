import Foundation
import Glibc
import TCPTopCore

/// Figure 4: short connections opened and closed as fast as the machine
/// can, with the daemon running; then a check that every byte of them is in
/// the daemon's counters.
enum ChurnFigure {
    /// The comm of the churning threads, to find their series.
    static let threadName = "tcptop-churn"
    static let bytesPerConnection = 100

    static func run(_ settings: Settings) -> [Row] {
        var configs: [(label: String, path: String?)] = [("defaults", nil)]
        // The shipped defaults poll every 5 s; a churn this fast may need
        // faster polling, so the same run is also made with a 1 s poll.
        let fastPoll = Cleanup.shared.path("churn-poll-1s.yml")
        if FileManager.default.createFile(atPath: fastPoll, contents: Data("connections:\n  poll_interval: 1s\n".utf8)) {
            configs.append(("poll_interval: 1s", fastPoll))
        }
        if let custom = settings.churnConfig { configs = [(custom, custom)] }
        return configs.map { config in
            do {
                return try churn(configLabel: config.label, configPath: config.path, seconds: settings.churnSeconds)
            } catch {
                return Row.failed("4 churn, config \(config.label)", error)
            }
        }
    }

    private static func churn(configLabel: String, configPath: String?, seconds: Double) throws -> Row {
        let config = try ExporterConfig.load(path: configPath)
        let daemon = try DaemonUnderTest(configPath: configPath)
        let before = try Totals(daemon.metrics())

        // A few workers on 2 cores: each connects to its own listener,
        // accepts, sends, closes, and reads the other end to EOF.
        let workers = (0..<3).map { _ in
            Worker(name: threadName) { () -> Result<Int, BenchError> in
                do { return .success(try churnLoop(seconds: seconds)) } catch { return .failure(BenchError("\(error)")) }
            }
        }
        let start = now()
        var connections = 0
        for worker in workers { connections += try worker.join().get() }
        let elapsed = now() - start

        // The scrape reads the kernel itself; waiting one poll interval also
        // lets the daemon's own collection of closed connections run.
        sleepSeconds(config.connections.pollInterval.inSeconds + 0.5)
        let after = try Totals(daemon.metrics())
        daemon.stop()

        let expected = Double(connections * bytesPerConnection)
        let missingSent = expected - after.churnSent, missingReceived = expected - after.churnReceived
        let unattributed = after.unattributed - before.unattributed
        let exact = missingSent == 0 && missingReceived == 0 && unattributed == 0
        // Closes the kernel could not record explain entries that stay behind.
        let unrecorded = after.closesNotRecorded - before.closesNotRecorded
        let verdict = exact ? "exact: yes"
            : "exact: NO (missing \(format(missingSent, 0)) sent, \(format(missingReceived, 0)) received bytes; unattributed +\(format(unattributed, 0)); closes not recorded +\(format(unrecorded, 0)))"
        let rate = Double(connections) / elapsed
        return Row(
            figure: "4 churn, config \(configLabel) (poll \(format(config.connections.pollInterval.inSeconds, 0)) s, map \(config.bpf.mapCapacity))",
            measured: "\(formatRate(rate, unit: "conns")) (\(connections) in \(format(elapsed, 1)) s), \(verdict); after it: "
                + "RSS \(format(after.residentBytes / 1_048_576, 0)) MiB, \(format(after.series, 0)) series, \(format(after.openEnds, 0)) open ends",
            target: "≥ 20k/s, exact", met: exact && rate >= 20_000)
    }

    /// One worker: returns the number of complete connections.
    static func churnLoop(seconds: Double) throws -> Int {
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        let payload = [UInt8](repeating: 0x2a, count: bytesPerConnection)
        var count = 0
        let deadline = now() + seconds
        while now() < deadline {
            let (client, server) = try Loopback.pair(listener: listener, port: port)
            do {
                try payload.withUnsafeBytes { try Loopback.sendAll(client, $0) }
            } catch {
                close(client)
                close(server)
                throw error
            }
            close(client)
            let received = Loopback.drain(server, bufferSize: 4096)
            // The reset leaves no TIME_WAIT behind, so ports do not run out.
            Loopback.closeAbortively(server)
            guard received == bytesPerConnection else { throw BenchError("churn: received \(received) of \(bytesPerConnection) bytes") }
            count += 1
        }
        return count
    }

    /// Sums the churn threads' series and the unattributed bytes in one scrape.
    private struct Totals {
        var churnSent = 0.0, churnReceived = 0.0, unattributed = 0.0, closesNotRecorded = 0.0
        var residentBytes = 0.0, series = 0.0, openEnds = 0.0

        init(_ samples: [ParsedSample]) {
            for sample in samples {
                switch sample.name {
                case "tcptop_sent_bytes_total" where sample.labels["comm"] == ChurnFigure.threadName:
                    churnSent += sample.value
                case "tcptop_received_bytes_total" where sample.labels["comm"] == ChurnFigure.threadName:
                    churnReceived += sample.value
                case "tcptop_unattributed_bytes_total":
                    unattributed += sample.value
                case "tcptop_exporter_closes_not_recorded_total":
                    closesNotRecorded += sample.value
                case "process_resident_memory_bytes":
                    residentBytes = sample.value
                case "tcptop_exporter_series":
                    series += sample.value
                case "tcptop_exporter_connections":
                    openEnds = sample.value
                default:
                    break
                }
            }
        }
    }
}
