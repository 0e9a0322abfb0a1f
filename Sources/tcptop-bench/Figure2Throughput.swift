import Foundation
import Glibc
import TCPTopBPF

/// Figure 2: throughput with the daemon running (tracer on) over without it
/// (off), for each plan measured (the daemon forced to it). Each round runs
/// off and every plan once, in an order that turns by one each round, so
/// that the machine's noise falls on every side alike; the plans share the
/// "off" rounds.
enum ThroughputFigure {
    static func run(_ settings: Settings) -> [Row] {
        let survey = settings.survey
        if let error = survey.error { return [Row.failed("2 throughput", BenchError(error))] }
        let plans = survey.plans
        let workloads: [(name: String, unit: String, target: (MeasuredPlan) -> Double, measure: (Double) throws -> Double)] = [
            ("2a 1-byte send loop, on/off", "sends", \.sendLoopTarget, sendLoop),
            ("2b 1-byte ping-pong (2 processes), on/off", "round trips", { _ in 0.95 }, pingPong),
            ("2c bulk 64 KiB writes, on/off", "B", { _ in 0.99 }, bulk),
        ]
        // rates[plan][workload]; index plans.count is "off".
        var rates = [[[Double]]](repeating: [[Double]](repeating: [], count: workloads.count), count: plans.count + 1)
        let tcptopPrograms = Set(BPFProgram.allCases.map(\.rawValue))
        var foreignRounds = 0
        do {
            for round in 0..<settings.throughputRounds {
                let states = Array(0...plans.count)
                for state in states[(round % states.count)...] + states[..<(round % states.count)] {
                    let plan = state < plans.count ? plans[state] : nil
                    let daemon = try plan.map { try DaemonUnderTest(arguments: $0.daemonArguments) }
                    if let daemon, let plan { try checkPlan(of: daemon, is: plan) }
                    // The kernel frees a stopped daemon's programs after a grace period: wait for it.
                    let expected = plan?.plan.programs.count ?? 0
                    for _ in 0..<30 where LoadedPrograms.count(namedIn: tcptopPrograms) > expected { usleep(100_000) }
                    if LoadedPrograms.count(namedIn: tcptopPrograms) > expected { foreignRounds += 1 }
                    for (index, workload) in workloads.enumerated() {
                        rates[state][index].append(try workload.measure(settings.roundSeconds))
                    }
                    daemon?.stop()
                }
            }
        } catch {
            return [Row.failed("2 throughput", error)]
        }
        // Said on every row: the ratio understates the cost when "off" was not off.
        let caveat = foreignRounds == 0 ? ""
            : "; another tcptop tracer was attached in \(foreignRounds) of \((plans.count + 1) * settings.throughputRounds) rounds"
        return plans.enumerated().flatMap { planIndex, plan in
            workloads.enumerated().map { index, workload in
                let (rateOn, rateOff) = (median(rates[planIndex][index]), median(rates[plans.count][index]))
                let ratio = rateOn / rateOff
                let target = workload.target(plan)
                return Row(figure: "\(workload.name) (\(plan.name))",
                           measured: "\(format(ratio, 3)) (on \(formatRate(rateOn, unit: workload.unit)), off \(formatRate(rateOff, unit: workload.unit)))\(caveat)",
                           target: "≥ \(target)" + (index == 0 ? " (\(plan.role))" : ""), met: ratio >= target)
            }
        }
    }

    /// The daemon's own metric says which plan it took: the one forced.
    private static func checkPlan(of daemon: DaemonUnderTest, is plan: MeasuredPlan) throws {
        let sample = try daemon.metrics().first { $0.name == "tcptop_exporter_attach_mode" }
        let taken = sample.map { "\($0.labels["mode"] ?? "?")+\($0.labels["read_path"] ?? "?")" } ?? "no tcptop_exporter_attach_mode"
        guard taken == "\(plan.plan.hooks.rawValue)+\(plan.plan.readPath.rawValue)" else {
            throw BenchError("the daemon started with \(plan.daemonArguments.joined(separator: " ")) runs \(taken), not \(plan.name)")
        }
    }

    /// (a) One connection; this thread sends 1 byte per call as fast as it
    /// can (Nagle left on: the cheapest send, so the hook's share is largest),
    /// a second thread drains. Returns send calls per second.
    static func sendLoop(seconds: Double) throws -> Double {
        let connection = try DrainedConnection()
        let client = connection.client
        var byte: UInt8 = 1
        var sends = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            for _ in 0..<256 {  // the clock is read once per batch, not per send
                guard send(client, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { throw BenchError("send: \(errnoText())") }
                sends += 1
            }
            elapsed = now() - start
        } while elapsed < seconds
        connection.finish()
        return Double(sends) / elapsed
    }

    /// (b) 1-byte request, 1-byte response, with a peer process
    /// (`tcptop-bench --peer pingpong PORT`). Returns round trips per second.
    static func pingPong(seconds: Double) throws -> Double {
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)  // accept gives up if the peer never connects
        setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let peer = Process()
        peer.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        peer.arguments = ["--peer", "pingpong", "\(port)"]
        peer.standardOutput = FileHandle.nullDevice
        try peer.run()
        Cleanup.shared.track(peer.processIdentifier)
        defer {
            peer.waitUntilExit()
            Cleanup.shared.untrack(peer.processIdentifier)
        }
        let fd = try Loopback.accept(listener)
        defer { close(fd) }  // the peer sees EOF and exits
        Loopback.setNoDelay(fd)

        var byte: UInt8 = 1
        var trips = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            for _ in 0..<64 {
                guard send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1, recv(fd, &byte, 1, 0) == 1 else {
                    throw BenchError("ping-pong peer went away: \(errnoText())")
                }
                trips += 1
            }
            elapsed = now() - start
        } while elapsed < seconds
        return Double(trips) / elapsed
    }

    /// The peer side of (b): echoes each byte until the other end closes.
    static func pingPongPeer(port: UInt16) throws {
        let fd = try Loopback.connect(port: port)
        defer { close(fd) }
        Loopback.setNoDelay(fd)
        var byte: UInt8 = 0
        while recv(fd, &byte, 1, 0) == 1 {
            guard send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { return }
        }
    }

    /// (c) One connection, 64 KiB per send, a thread draining. Returns bytes per second.
    static func bulk(seconds: Double) throws -> Double {
        let connection = try DrainedConnection()
        let client = connection.client
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { chunk.deallocate() }
        chunk.initializeMemory(as: UInt8.self, repeating: 7)
        var bytes = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            let sent = send(client, chunk.baseAddress, chunk.count, Int32(MSG_NOSIGNAL))
            guard sent > 0 else { throw BenchError("bulk send: \(errnoText())") }
            bytes += sent
            elapsed = now() - start
        } while elapsed < seconds
        connection.finish()
        return Double(bytes) / elapsed
    }
}
