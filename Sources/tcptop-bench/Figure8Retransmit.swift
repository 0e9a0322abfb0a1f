import Foundation
import Glibc
import TCPTopBPF

/// Figure 8: BPF time per retransmitted skb (tcp:tcp_retransmit_skb), from
/// the kernel's accounting of the plan's retransmit program, for each plan
/// measured, under real retransmits: a bulk stream across the delay line
/// (5 ms each way, 3% of the client's data segments dropped). A second row
/// per plan has figure 4's churn running on loopback beside the stream (the
/// same tracer sees its connections open, count and close).
enum RetransmitFigure {
    static let retransmitPrograms: Set<BPFProgram> = [.retransmit, .retransmitErr, .rawRetransmit, .rawRetransmitErr]
    /// Figure 4 runs three churning threads; two leave a core's share for the stream and the delay line here.
    static let churnWorkers = 2

    /// One round's facts.
    struct Sample {
        var runTimeNanoseconds: UInt64 = 0, runCount: UInt64 = 0
        /// The client's tcpi_total_retrans (segments), the kernel's own count.
        var kernelRetransmits = 0
        var churnConnections = 0
    }

    static func run(_ settings: Settings) -> [Row] {
        let title = "8 BPF time per retransmitted skb"
        if let error = settings.survey.error { return [Row.failed(title, BenchError(error))] }
        let plans = settings.survey.plans.compactMap { plan in
            plan.plan.programs.first(where: retransmitPrograms.contains).map { (plan: plan, program: $0) }
        }
        guard !plans.isEmpty else {
            return [Row(figure: title, measured: "not measured: kernel \(kernelRelease()) has no tcp:tcp_retransmit_skb (no plan loads a retransmit program)")]
        }
        let streamSeconds = settings.quick ? 1.0 : 2.0
        do {
            let statistics = try RunTimeStatistics()
            defer { withExtendedLifetime(statistics) {} }
            // Each round is the stream plus its drain and set-up: bounded by 20 s.
            let bound = plans.count * settings.rounds * 2 * 20 + 30
            let line = try DelayLineRun(["--delay-ms", "5", "--drop-percent", "3", "--drop-match", "data",
                                         "--drop-side", "a", "--seed", "8"], seconds: bound)
            defer {
                if let stats = line.stop() { FileHandle.standardError.write(Data("  delay line: \(stats)\n".utf8)) }
            }
            var samples = [[Bool: [Sample]]](repeating: [:], count: plans.count)
            for roundIndex in 0..<settings.rounds {
                // Plans alternate, their order turning by one each round; one tracer at a time.
                for index in plans.indices.map({ ($0 + roundIndex) % plans.count }) {
                    for churn in [false, true] {
                        let sample = try round(plans[index].plan, plans[index].program, line: line,
                                               seconds: streamSeconds, churn: churn)
                        samples[index][churn, default: []].append(sample)
                    }
                }
            }
            var rows: [Row] = []
            for (index, entry) in plans.enumerated() {
                for churn in [false, true] {
                    rows.append(row(entry.plan, entry.program, samples[index][churn] ?? [], churn: churn))
                }
            }
            return rows
        } catch {
            return [Row.failed(title, error)]
        }
    }

    private static func row(_ plan: MeasuredPlan, _ program: BPFProgram, _ samples: [Sample], churn: Bool) -> Row {
        let runs = samples.reduce(0) { $0 + $1.runCount }
        let kernel = samples.reduce(0) { $0 + $1.kernelRetransmits }
        let perSkb = samples.filter { $0.runCount > 0 }.map { Double($0.runTimeNanoseconds) / Double($0.runCount) }
        let condition = churn ? ", figure 4's churn beside it" : ""
        var measured = perSkb.isEmpty ? "no retransmit seen (n=0)" : "\(format(median(perSkb), 0)) ns per skb (n=\(runs))"
        measured += "; the kernel's count: \(kernel) segments retransmitted (tcpi_total_retrans)"
        if churn {
            let connections = samples.reduce(0) { $0 + $1.churnConnections }
            measured += "; churn \(connections) connections"
        }
        return Row(figure: "8 BPF time per retransmitted skb, \(program.rawValue) (\(plan.name)\(condition))", measured: measured)
    }

    /// One tracer, one connection across the delay line: `seconds` of 64 KiB
    /// writes, then the end of the stream drained; the program's runs in between.
    private static func round(_ plan: MeasuredPlan, _ program: BPFProgram, line: DelayLineRun,
                              seconds: Double, churn: Bool) throws -> Sample {
        let tracer = try TCPTracer.start(plan.options())
        let (client, server) = try line.connect(timeout: 10)
        defer {
            close(client)
            close(server)
        }
        // A smaller send buffer keeps the drain after the stream short.
        var bufferBytes: Int32 = 512 * 1024
        setsockopt(client, SOL_SOCKET, SO_SNDBUF, &bufferBytes, socklen_t(MemoryLayout<Int32>.size))
        let receiver = Worker { Loopback.drain(server) }  // ends at EOF, or after 10 s without data

        let churners = churn ? (0..<churnWorkers).map { _ in
            Worker(name: ChurnFigure.threadName) { () -> Result<Int, BenchError> in
                do { return .success(try ChurnFigure.churnLoop(seconds: seconds)) } catch { return .failure(BenchError("\(error)")) }
            }
        } : []
        let before = try stats(tracer, program)
        let chunk = [UInt8](repeating: 0x5a, count: 64 * 1024)
        let deadline = now() + seconds
        var failure: BenchError?
        while now() < deadline && failure == nil {
            let sent = chunk.withUnsafeBytes { send(client, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { failure = BenchError("send across the delay line: \(errnoText())") }
        }
        shutdown(client, Int32(SHUT_WR))
        _ = receiver.join()
        let after = try stats(tracer, program)
        var connections = 0
        for worker in churners { connections += try worker.join().get() }
        if let failure { throw failure }

        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(client, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else {
            throw BenchError("TCP_INFO: \(errnoText())")
        }
        return Sample(runTimeNanoseconds: after.runTimeNanoseconds - before.runTimeNanoseconds,
                      runCount: after.runCount - before.runCount,
                      kernelRetransmits: Int(info.tcpi_total_retrans), churnConnections: connections)
    }

    private static func stats(_ tracer: TCPTracer, _ program: BPFProgram) throws -> ProgramStats {
        guard let stats = tracer.programStats().first(where: { $0.name == program.rawValue }) else {
            throw BenchError("\(tracer.plan.name): no run-time statistics of \(program.rawValue)")
        }
        return stats
    }
}
