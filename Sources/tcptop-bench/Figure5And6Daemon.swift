import Foundation
import Glibc

/// Figure 5: the daemon at rest (no scrapes, no traffic from the bench).
enum IdleFigure {
    static func run(_ settings: Settings) -> [Row] {
        do {
            let daemon = try DaemonUnderTest()
            sleepSeconds(2)  // start-up work is not idle time
            guard let cpuBefore = cpuSeconds(pid: daemon.pid) else { throw BenchError("cannot read /proc/\(daemon.pid)/stat") }
            sleepSeconds(settings.idleSeconds)
            guard let cpuAfter = cpuSeconds(pid: daemon.pid) else { throw BenchError("the daemon went away while idle") }
            let rss = daemon.restingRSS
            daemon.stop()
            let used = cpuAfter - cpuBefore
            let percent = 100 * used / settings.idleSeconds
            return [
                Row(figure: "5 idle CPU over \(format(settings.idleSeconds, 0)) s",
                    measured: "\(format(used, 2)) s = \(format(percent, 3))% of one CPU (10 ms ticks)",
                    target: "≤ 0.1%", met: percent <= 0.1),
                Row(figure: "5 RSS at rest", measured: formatBytes(rss), target: "≤ 30 MiB", met: rss <= 30 << 20),
            ]
        } catch {
            return [Row.failed("5 idle", error)]
        }
    }
}

/// Figure 6: from the spawn call to READY=1 on the notify socket.
enum StartupFigure {
    static func run(_ settings: Settings) -> [Row] {
        do {
            var times: [Double] = []
            for _ in 0..<settings.rounds {
                let daemon = try DaemonUnderTest()
                times.append(daemon.startSeconds)
                daemon.stop()
            }
            let time = median(times)
            return [Row(figure: "6 start-up, exec → READY=1", measured: "\(formatSeconds(time)) (max \(formatSeconds(times.max() ?? 0)))",
                        target: "≤ 0.5 s", met: time <= 0.5)]
        } catch {
            return [Row.failed("6 start-up", error)]
        }
    }
}
