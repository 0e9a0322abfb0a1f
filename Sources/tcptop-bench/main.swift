import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore

/// tcptop-bench: the figures of the README's performance table, as one table.
///
///   tcptop-bench [FIGURE...] [--only NAME...] [--attach-mode HOOKS] [--read-path PATH] [--quick]
///                [--idle-seconds N] [--churn-seconds N] [--churn-config FILE]
///
/// FIGURE is 1-9, NAME one of bpf, throughput, scrape, churn, idle, startup, flood, retransmit, lifecycle.
/// Figures 1, 2, 8 and 9 are measured for every plan (hooks + read path) the
/// kernel allows; --attach-mode and --read-path restrict them to those
/// plans (the daemon's --bpf.attach-mode / --bpf.read-path values).
/// Internal modes (the bench runs itself as a child):
///   --peer pingpong PORT      the other process of the ping-pong (figure 2b)
///   --synthetic-scrape N [shipped]  one synthetic scrape size (figure 3), with the shipped views

struct Settings {
    var figures: Set<Int> = Set(1...9)
    var quick = false
    /// Rounds per median (figures 1, 3, 6, 8, 9).
    var rounds = 5
    /// Throughput ratios are the noisiest figures: more rounds, each this long.
    var throughputRounds = 7
    var roundSeconds = 1.0
    var streamEvents = 300_000
    var realSeries = [1_000, 10_000]
    var syntheticSeries = [10_000, 100_000, 1_000_000]
    var churnSeconds = 3.0
    var idleSeconds = 60.0
    var churnConfig: String?
    /// Figures 1, 2, 8 and 9: the plans within these (auto: any).
    var attachMode: BPFAttachMode = .auto
    var readPath: BPFReadPath = .auto
    /// The plans figures 1, 2, 8 and 9 measure, found before they run.
    var survey = PlanSurvey()

    static let figureNames = ["bpf": 1, "throughput": 2, "scrape": 3, "churn": 4, "idle": 5, "startup": 6, "flood": 7, "retransmit": 8, "lifecycle": 9]

    mutating func makeQuick() {
        quick = true
        rounds = 3
        throughputRounds = 3
        roundSeconds = 0.3
        streamEvents = 50_000
        syntheticSeries = [10_000, 100_000]
        churnSeconds = 1
        idleSeconds = 5
    }
}

func usageError(_ text: String) -> Never {
    FileHandle.standardError.write(Data("tcptop-bench: \(text)\n".utf8))
    exit(2)
}

func parseArguments(_ arguments: [String]) -> Settings {
    var settings = Settings()
    var chosen: Set<Int> = []
    var idleSeconds: Double?
    var churnSeconds: Double?
    var rest = arguments[...]
    func value(_ option: String) -> String {
        guard let value = rest.popFirst() else { usageError("\(option) needs a value") }
        return value
    }
    while let argument = rest.popFirst() {
        switch argument {
        case "--quick": settings.makeQuick()
        case "--only":
            let name = value(argument)
            guard let figure = Settings.figureNames[name] else {
                usageError("--only: unknown figure \"\(name)\" (\(Settings.figureNames.keys.sorted().joined(separator: ", ")))")
            }
            chosen.insert(figure)
        case "--idle-seconds":
            guard let seconds = Double(value(argument)), seconds > 0 else { usageError("--idle-seconds needs a positive number") }
            idleSeconds = seconds
        case "--churn-config": settings.churnConfig = value(argument)
        case "--attach-mode":
            let name = value(argument)
            guard let mode = BPFAttachMode(rawValue: name) else {
                usageError("--attach-mode must be one of \(BPFAttachMode.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(name)\"")
            }
            settings.attachMode = mode
        case "--read-path":
            let name = value(argument)
            guard let path = BPFReadPath(rawValue: name) else {
                usageError("--read-path must be one of \(BPFReadPath.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(name)\"")
            }
            settings.readPath = path
        case "--churn-seconds":
            guard let seconds = Double(value(argument)), seconds > 0 else { usageError("--churn-seconds needs a positive number") }
            churnSeconds = seconds
        case "-h", "--help":
            print("usage: tcptop-bench [1-9...] [--only bpf|throughput|scrape|churn|idle|startup|flood|retransmit|lifecycle] [--attach-mode auto|tp_btf|raw_tp|fexit|kprobe] [--read-path auto|storage_iterator|socket_hash] [--quick] [--idle-seconds N] [--churn-seconds N] [--churn-config FILE]")
            print("Figures 1, 2, 8 and 9 measure every plan (hooks + read path) the kernel allows; --attach-mode and --read-path restrict them.")
            exit(0)
        default:
            guard let figure = Int(argument), (1...9).contains(figure) else { usageError("unknown argument \"\(argument)\"") }
            chosen.insert(figure)
        }
    }
    if !chosen.isEmpty { settings.figures = chosen }
    if let idleSeconds { settings.idleSeconds = idleSeconds }
    if let churnSeconds { settings.churnSeconds = churnSeconds }
    return settings
}

// MARK: Entry

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "--peer":
    guard arguments.count == 3, arguments[1] == "pingpong", let port = UInt16(arguments[2]) else { usageError("--peer pingpong PORT") }
    do { try ThroughputFigure.pingPongPeer(port: port) } catch { usageError("peer: \(error)") }
    exit(0)
case "--synthetic-scrape":
    guard (2...3).contains(arguments.count), let series = Int(arguments[1]), series > 0,
          arguments.count == 2 || arguments[2] == "shipped" else { usageError("--synthetic-scrape N [shipped]") }
    ScrapeFigure.syntheticChild(series: series, rounds: 5, shipped: arguments.count == 3)
    exit(0)
default:
    break
}

var settings = parseArguments(arguments)
guard getuid() == 0 else {
    usageError("must run as root (it loads BPF programs and starts tcptop-exporter)")
}
Cleanup.shared.installSignalHandlers()

print(Table.header(quick: settings.quick))
if !settings.figures.isDisjoint(with: [1, 2, 8, 9]) {
    let forced = [settings.attachMode.rawValue, settings.readPath.rawValue]
    FileHandle.standardError.write(Data("… plans for figures 1, 2, 8 and 9 (attach mode \(forced[0]), read path \(forced[1])): starting each\n".utf8))
    settings.survey = PlanSurvey.run(attachMode: settings.attachMode, readPath: settings.readPath)
    FileHandle.standardError.write(Data("  \(settings.survey.summary)\n".utf8))
}
let figures: [(number: Int, name: String, run: (Settings) -> [Row])] = [
    (1, "BPF time per event", BPFCostFigure.run),
    (2, "throughput on/off", ThroughputFigure.run),
    (3, "scrape", ScrapeFigure.run),
    (4, "churn", ChurnFigure.run),
    (5, "idle", IdleFigure.run),
    (6, "start-up", StartupFigure.run),
    (7, "idle flood", IdleFloodFigure.run),
    (8, "BPF time per retransmitted skb", RetransmitFigure.run),
    (9, "BPF time per lifecycle event", LifecycleFigure.run),
]
var rows: [Row] = []
let benchStart = now()
for figure in figures where settings.figures.contains(figure.number) {
    let start = now()
    FileHandle.standardError.write(Data("… figure \(figure.number): \(figure.name)\n".utf8))
    let figureRows = figure.run(settings)
    rows += figureRows
    FileHandle.standardError.write(Data("  done in \(format(now() - start)) s: \(figureRows.map(\.measured).joined(separator: "; "))\n".utf8))
}
Cleanup.shared.run()

print()
print(Table.render(rows))
print()
if !settings.figures.isDisjoint(with: [1, 2, 8, 9]) {
    let forced = settings.attachMode == .auto && settings.readPath == .auto
        ? "" : " within --attach-mode \(settings.attachMode.rawValue) --read-path \(settings.readPath.rawValue)"
    print("Figures 1, 2, 8 and 9, every plan this kernel allows\(forced): \(settings.survey.summary). The fast path is the best plan the kernel's BTF makes possible; the others are fallbacks (targets ≤ 60 ns per event, send loop ≥ 0.92).")
}
if settings.figures.contains(1) {
    print("Figure 1 enables BPF run-time statistics with BPF_ENABLE_STATS (an fd, closed on exit): kernel.bpf_stats_enabled is never changed, so there is nothing to restore, even after a crash.")
}
if settings.figures.contains(3) {
    print("Figure 3 synthetic: the daemon's registry + renderer in a child process (update of every series, snapshot, then the text streamed in 64 KiB pieces to a sink that counts them), peak RSS of that child, its input (the read of N connection ends) included; the kernel read is timed in the real rows, and \"a scrape +X\" there is how far the daemon's RSS rose during one scrape.")
}
if settings.figures.contains(8) {
    print("Figure 8: a 64 KiB-write stream across a user-space delay line between two network namespaces (5 ms each way, 3% of the client's data segments dropped), \(settings.quick ? 1 : 2) s per round; ns per skb is the retransmit program's run_time_ns/run_cnt (median of rounds), n its runs in all rounds (any retransmit on the machine runs it); the churn row runs \(RetransmitFigure.churnWorkers) of figure 4's churning threads on loopback beside the stream, no daemon.")
}
if settings.figures.contains(9) {
    print("Figure 9: \(LifecycleFigure.workers) threads, \(settings.quick ? "0.5" : "1") s per round and load, one tracer read every 0.5 s (as the daemon polls); ns per event is each program's run_time_ns/run_cnt (median of rounds), n its runs in all rounds (any TCP socket on the machine runs them). Churn: figure 4's loop (the client closes, the server drains and closes with SO_LINGER {1, 0}); resets: the client closes with SO_LINGER {1, 0} while established, one reset sent and one received per connection.")
}
print("Total \(format(now() - benchStart, 0)) s.")
exit(rows.contains(where: \.failed) ? 1 : 0)  // a missed target is a result, not a failure
