import Foundation
import Glibc
import TCPTopBPF

/// Figure 9: BPF time per connection-lifecycle event, from the kernel's
/// accounting of each plan's programs, for each plan measured. Two loads,
/// each with one tracer attached and read every half second (as a daemon
/// polls, so closed connections leave the kernel maps):
///   churn  figure 4's churn (its loop, its three threads): the state-change
///          program (sock:inet_sock_set_state, several runs per connection)
///          beside the close program (tcp_destroy_sock) in the same runs;
///   resets connections whose client closes with SO_LINGER {1, 0} while
///          established: one tcp_send_reset on the client, one
///          tcp_receive_reset on the server per connection.
enum LifecycleFigure {
    static let workers = 3
    static let stateKinds: Set<BPFProgram> = [.state, .rawState]
    static let destroyKinds: Set<BPFProgram> = [.destroy, .rawDestroy]
    static let sendResetKinds: Set<BPFProgram> = [.sendReset, .rawSendReset]
    static let receiveResetKinds: Set<BPFProgram> = [.receiveReset, .rawReceiveReset]

    /// A plan's lifecycle programs (nil where the kernel lacks the tracepoint).
    struct Programs {
        var state, destroy, sendReset, receiveReset: BPFProgram?
        init(_ plan: AttachPlan) {
            func first(_ kinds: Set<BPFProgram>) -> BPFProgram? { plan.programs.first(where: kinds.contains) }
            state = first(stateKinds)
            destroy = first(destroyKinds)
            sendReset = first(sendResetKinds)
            receiveReset = first(receiveResetKinds)
        }
        var all: [BPFProgram] { [state, destroy, sendReset, receiveReset].compactMap { $0 } }
    }

    /// One round: each program's run time and runs, and the connections made.
    struct Sample {
        var programs: [BPFProgram: (time: UInt64, runs: UInt64)] = [:]
        var connections = 0
    }

    enum Load: CaseIterable { case churn, resets }

    static func run(_ settings: Settings) -> [Row] {
        let title = "9 BPF time per lifecycle event"
        if let error = settings.survey.error { return [Row.failed(title, BenchError(error))] }
        let plans = settings.survey.plans.map { (plan: $0, programs: Programs($0.plan)) }
            .filter { $0.programs.state != nil || $0.programs.sendReset != nil }
        guard !plans.isEmpty else {
            return [Row(figure: title, measured: "not measured: kernel \(kernelRelease()) has neither sock:inet_sock_set_state nor the reset tracepoints")]
        }
        let seconds = settings.quick ? 0.5 : 1.0
        do {
            let statistics = try RunTimeStatistics()
            defer { withExtendedLifetime(statistics) {} }
            var samples = [[Load: [Sample]]](repeating: [:], count: plans.count)
            for roundIndex in 0..<settings.rounds {
                // Plans alternate, their order turning by one each round; one tracer at a time.
                for index in plans.indices.map({ ($0 + roundIndex) % plans.count }) {
                    for load in Load.allCases {
                        let sample = try round(plans[index].plan, plans[index].programs, load: load, seconds: seconds)
                        samples[index][load, default: []].append(sample)
                    }
                }
            }
            return plans.enumerated().flatMap { index, entry in
                [churnRow(entry.plan, entry.programs, samples[index][.churn] ?? []),
                 resetRow(entry.plan, entry.programs, samples[index][.resets] ?? [])]
            }
        } catch {
            return [Row.failed(title, error)]
        }
    }

    private static func churnRow(_ plan: MeasuredPlan, _ programs: Programs, _ samples: [Sample]) -> Row {
        let connections = samples.reduce(0) { $0 + $1.connections }
        var parts: [String] = []
        if let state = programs.state {
            let runs = total(samples, state)
            let perConnection = connections > 0 ? ", \(format(Double(runs) / Double(connections))) per connection" : ""
            parts.append("\(perEvent(samples, state)) ns per state change (n=\(runs)\(perConnection))")
        } else {
            parts.append("no sock:inet_sock_set_state here")
        }
        if let destroy = programs.destroy {
            parts.append("\(destroy.rawValue) \(perEvent(samples, destroy)) ns per close (n=\(total(samples, destroy)))")
        }
        parts.append("\(connections) connections")
        return Row(figure: "9 state change, \(programs.state?.rawValue ?? "-") (\(plan.name), figure 4's churn)",
                   measured: parts.joined(separator: "; "))
    }

    private static func resetRow(_ plan: MeasuredPlan, _ programs: Programs, _ samples: [Sample]) -> Row {
        let connections = samples.reduce(0) { $0 + $1.connections }
        guard let send = programs.sendReset, let receive = programs.receiveReset else {
            return Row(figure: "9 resets (\(plan.name))", measured: "not measured: no tcp_send_reset/tcp_receive_reset tracepoints")
        }
        return Row(figure: "9 reset sent / received, \(send.rawValue) / \(receive.rawValue) (\(plan.name), SO_LINGER {1, 0} closes)",
                   measured: "\(perEvent(samples, send)) / \(perEvent(samples, receive)) ns per reset "
                       + "(n=\(total(samples, send)) / \(total(samples, receive))); \(connections) connections reset")
    }

    private static func total(_ samples: [Sample], _ program: BPFProgram) -> UInt64 {
        samples.reduce(0) { $0 + ($1.programs[program]?.runs ?? 0) }
    }

    /// The median over rounds of run time / runs; "-" if it never ran.
    private static func perEvent(_ samples: [Sample], _ program: BPFProgram) -> String {
        let costs = samples.compactMap { sample -> Double? in
            guard let entry = sample.programs[program], entry.runs > 0 else { return nil }
            return Double(entry.time) / Double(entry.runs)
        }
        return costs.isEmpty ? "-" : format(median(costs), 0)
    }

    /// One tracer, `workers` threads of one load for `seconds`, the tracer
    /// read every half second meanwhile; each program's runs in between.
    private static func round(_ plan: MeasuredPlan, _ programs: Programs, load: Load, seconds: Double) throws -> Sample {
        let tracer = try TCPTracer.start(plan.options())
        let before = try stats(tracer, programs)
        let threads = (0..<workers).map { _ in
            Worker(name: ChurnFigure.threadName) { () -> Result<Int, BenchError> in
                do {
                    return .success(try load == .churn ? ChurnFigure.churnLoop(seconds: seconds) : resetLoop(seconds: seconds))
                } catch {
                    return .failure(BenchError("\(error)"))
                }
            }
        }
        let deadline = now() + seconds
        var readError: Error?
        while now() < deadline && readError == nil {
            sleepSeconds(min(0.5, max(0, deadline - now())))
            do { _ = try tracer.read() } catch { readError = error }
        }
        var sample = Sample()
        var workerError: Error?
        for thread in threads {
            switch thread.join() {
            case .success(let count): sample.connections += count
            case .failure(let error): workerError = error
            }
        }
        let after = try stats(tracer, programs)
        if let error = workerError ?? readError { throw error }
        for program in programs.all {
            let (start, end) = (before[program]!, after[program]!)
            sample.programs[program] = (end.runTimeNanoseconds - start.runTimeNanoseconds, end.runCount - start.runCount)
        }
        return sample
    }

    /// Connections reset on purpose: connect, 100 bytes, the client closes
    /// with SO_LINGER {1, 0} while established (an RST the server receives),
    /// the server reads to the reset and closes. Nothing is left in TIME_WAIT.
    static func resetLoop(seconds: Double) throws -> Int {
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        let payload = [UInt8](repeating: 0x2a, count: ChurnFigure.bytesPerConnection)
        var count = 0
        let deadline = now() + seconds
        while now() < deadline {
            let (client, server) = try Loopback.pair(listener: listener, port: port)
            setTimeouts(server, seconds: 5)  // the reset ends the read; this bounds it if none came
            do {
                try payload.withUnsafeBytes { try Loopback.sendAll(client, $0) }
            } catch {
                close(client)
                close(server)
                throw error
            }
            Loopback.closeAbortively(client)
            Loopback.drain(server, bufferSize: 4096)
            let reset = errno == ECONNRESET
            close(server)
            guard reset else { throw BenchError("reset loop: the server's read ended without ECONNRESET (\(errnoText()))") }
            count += 1
        }
        return count
    }

    private static func stats(_ tracer: TCPTracer, _ programs: Programs) throws -> [BPFProgram: ProgramStats] {
        let all = tracer.programStats()
        var found: [BPFProgram: ProgramStats] = [:]
        for program in programs.all {
            guard let stats = all.first(where: { $0.name == program.rawValue }) else {
                throw BenchError("\(tracer.plan.name): no run-time statistics of \(program.rawValue)")
            }
            found[program] = stats
        }
        return found
    }
}
