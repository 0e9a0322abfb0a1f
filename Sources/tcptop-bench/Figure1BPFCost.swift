import Foundation
import Glibc
import TCPTopBPF

/// Figure 1: BPF time per send/recv event, from the kernel's own accounting
/// (run_time_ns / run_cnt per program) during a stream of 1-byte sends,
/// for each plan measured (its send and recv programs).
enum BPFCostFigure {
    static func run(_ settings: Settings) -> [Row] {
        let survey = settings.survey
        if let error = survey.error { return [Row.failed("1 BPF time per event", BenchError(error))] }
        do {
            // BPF_ENABLE_STATS through an fd: accounting ends when it is
            // closed (or the process dies); kernel.bpf_stats_enabled is untouched.
            let statistics = try RunTimeStatistics()
            defer { withExtendedLifetime(statistics) {} }

            let plans = try survey.plans.map { plan in (plan: plan, programs: try plan.eventPrograms()) }
            // A tgid no process can have: every event is filtered out right
            // after reading the tgid, which leaves the fixed cost of the hook.
            let noSuchPID = UInt32(pidMax() + 1)
            var counted = [[String: [Double]]](repeating: [:], count: plans.count), filtered = counted
            for roundIndex in 0..<settings.rounds {
                // Plans, and counting and filtered tracers, alternate (the plans' order
                // turning by one each round); never two tracers attached together.
                let order = plans.indices.map { ($0 + roundIndex) % plans.count }
                for index in order where plans[index].programs != nil {
                    let entry = plans[index]
                    for (name, cost) in try round(events: settings.streamEvents, options: entry.plan.options()) {
                        counted[index][name, default: []].append(cost)
                    }
                    for (name, cost) in try round(events: settings.streamEvents, options: entry.plan.options(targetPID: noSuchPID)) {
                        filtered[index][name, default: []].append(cost)
                    }
                }
            }
            var rows: [Row] = []
            for (index, entry) in plans.enumerated() {
                let plan = entry.plan
                guard let (send, recv) = entry.programs else {
                    rows.append(Row(figure: "1 BPF time per event (\(plan.name))",
                                    measured: "not measured: \(plan.plan.hooks.rawValue) counts an event in an entry/return pair"))
                    continue
                }
                for (program, label) in [(send, "send"), (recv, "recv")] {
                    let cost = median(counted[index][program.rawValue] ?? [])
                    rows.append(Row(figure: "1 BPF time per \(label) event (\(plan.name))", measured: format(cost) + " ns",
                                    target: "≤ \(format(plan.nanosecondTarget, 0)) ns (\(plan.role))", met: cost <= plan.nanosecondTarget))
                }
                let baseline = [send, recv].map { format(median(filtered[index][$0.rawValue] ?? [])) }
                rows.append(Row(figure: "1 baseline: hook + pid filter only, send/recv (\(plan.name))",
                                measured: baseline.joined(separator: " / ") + " ns"))
            }
            return rows
        } catch {
            return [Row.failed("1 BPF time per event", error)]
        }
    }

    /// Attaches a tracer, streams `events` 1-byte sends to a draining
    /// receiver, returns nanoseconds per run of each program.
    private static func round(events: Int, options: TCPTracer.Options) throws -> [String: Double] {
        let tracer = try TCPTracer.start(options)
        let connection = try DrainedConnection()
        let client = connection.client

        let before = tracer.programStats()
        var byte: UInt8 = 1
        for _ in 0..<events {
            guard send(client, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { break }
        }
        connection.finish()
        let after = tracer.programStats()

        var costs: [String: Double] = [:]
        for end in after {
            guard let start = before.first(where: { $0.name == end.name }), end.runCount > start.runCount else { continue }
            costs[end.name] = Double(end.runTimeNanoseconds - start.runTimeNanoseconds) / Double(end.runCount - start.runCount)
        }
        return costs
    }

    private static func pidMax() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 4_194_304
    }
}
