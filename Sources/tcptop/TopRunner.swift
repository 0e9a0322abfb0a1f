import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore

/// The interval loop for both sources: the kernel (BPF) and an exporter (--from).
struct TopRunner {
    let options: TopOptions
    let screen: TopScreen
    /// Never write escape codes into a file or pipe: behave as -C there.
    let clear: Bool

    init(options: TopOptions) {
        self.options = options
        screen = TopScreen(options: options)
        clear = !options.noClear && isatty(STDOUT_FILENO) == 1
    }

    func run() -> Int32 {
        if let url = options.fromURL { return runFromExporter(url) }
        var tracer: TCPTracer?
        do {
            tracer = try TCPTracer.start(.init(targetPID: options.pid ?? 0, cgroupPath: options.cgroupPath))
        } catch {
            Output.error("\(error)")
            return 1
        }
        // Attached: keep only what reading needs (none on Linux 6.5 and
        // later), before any other thread starts. Refused, it keeps what it had.
        _ = try? LeastPrivilege.dropAfterAttach(tracer!)
        // The tracer counts from attach: the first interval starts now.
        var counter = TopIntervalCounter<ConnectionID>()
        // Without the retransmit hook RETRANS is `-` (unknown), not a made-up 0.
        let retransmitsCounted = tracer!.countsRetransmits
        if options.lifetimes && !tracer!.seesStateChanges {
            Output.error("-L/--lifetimes: \(tracer!.healthGaps.joined(separator: "; "))")
            return 1
        }
        var closed: [ConnectionSample] = []
        let status = loop(summary: { Self.loadSummary() }, after: {
            options.lifetimes ? TopScreen.lifetimeLines(closed, family: options.family) : ""
        }) {
            let samples = try tracer!.read().connections
            if options.lifetimes { closed = samples.filter(\.closed) }
            return counter.advance(samples: samples, retransmitsCounted: retransmitsCounted)
        }
        tracer = nil  // detach the BPF programs before exiting
        return status
    }

    private func runFromExporter(_ url: TopMetricsURL) -> Int32 {
        var counter = TopIntervalCounter<ConnectionLabels>()
        let fetcher: MetricsFetcher
        do {
            fetcher = try MetricsFetcher(options: options, url: url)
            // The baseline: what the exporter counted before we started.
            _ = counter.advance(try fetcher.readings())
        } catch is StopSignals.Stopped {
            return 0
        } catch {
            Output.error("\(error)")
            return 1
        }
        return loop(summary: { TopScreen.sourceLine(time: Self.timeText(), source: url.description) }) {
            counter.advance(try fetcher.readings())
        }
    }

    /// Prints "Tracing...", then one screen per interval until `count` or a
    /// stop signal. Intervals are kept on a fixed schedule so they don't drift.
    private func loop(summary: () -> String, after: () -> String = { "" }, next: () throws -> [TopRow]) -> Int32 {
        guard Output.write(TopScreen.startLine(interval: options.interval)) else { return 0 }
        let interval = Double(options.interval)
        var deadline = StopSignals.now() + interval
        var printed = 0
        while options.count.map({ printed < $0 }) ?? true {
            if StopSignals.wait(until: deadline) { return 0 }
            deadline += interval
            if deadline < StopSignals.now() { deadline = StopSignals.now() + interval }  // fell behind (slow scrape)
            let rows: [TopRow]
            do {
                rows = try next()
            } catch is StopSignals.Stopped {
                return 0
            } catch {
                Output.error("\(error)")
                return 1
            }
            let text = screen.render(rows: rows, summary: options.noSummary ? nil : summary(), clear: clear) + after()
            guard Output.write(text) else { return 0 }  // stdout closed (e.g. `| head`): stop quietly
            printed += 1
        }
        return 0
    }

    static func loadSummary() -> String {
        let loadavg = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return TopScreen.summaryLine(time: timeText(), loadavg: loadavg)
    }

    /// Local time as HH:MM:SS.
    static func timeText() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 16)
        let length = strftime(&buffer, buffer.count, "%H:%M:%S", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Unbuffered writes to stdout and stderr: each screen goes out in one piece.
enum Output {
    /// false when stdout is gone.
    @discardableResult
    static func write(_ text: String, to fd: Int32 = STDOUT_FILENO) -> Bool {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            bytes = bytes.dropFirst(written)
        }
        return true
    }

    /// One line on stderr: `tcptop: <message>`.
    static func error(_ message: String) {
        write("tcptop: \(message)\n", to: STDERR_FILENO)
    }
}
