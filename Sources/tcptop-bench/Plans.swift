import Foundation
import TCPTopBPF
import TCPTopCore

/// One way of counting that figures 1, 2 and 8 measure: a plan (hooks + read
/// path) this kernel allows, found by starting a tracer forced to it.
struct MeasuredPlan {
    let plan: AttachPlan
    /// The best plan the kernel's BTF makes possible (auto's first choice):
    /// the fast path. Every other plan is a fallback, with looser targets.
    let isFastPath: Bool

    var name: String { plan.name }
    var attachMode: BPFAttachMode { plan.hooks.configValue }
    var readPath: BPFReadPath { plan.readPath.configValue }

    /// Figure 1's target, nanoseconds per event.
    var nanosecondTarget: Double { isFastPath ? 50 : 60 }
    /// Figure 2a's target (the 1-byte send loop, on/off).
    var sendLoopTarget: Double { isFastPath ? 0.95 : 0.92 }
    var role: String { isFastPath ? "fast path" : "fallback" }

    func options(targetPID: UInt32 = 0) -> TCPTracer.Options {
        TCPTracer.Options(targetPID: targetPID, attachMode: attachMode, readPath: readPath)
    }

    /// The daemon forced to this plan.
    var daemonArguments: [String] {
        ["--bpf.attach-mode=\(attachMode.rawValue)", "--bpf.read-path=\(readPath.rawValue)"]
    }

    /// The programs that count one send and one recv event. For tp_btf,
    /// raw_tp and fexit a plan's first two programs are its send and recv
    /// counters, one run per event. kprobe counts each event in an
    /// entry/return pair, which figure 1 does not add up: nil.
    func eventPrograms() throws -> (send: BPFProgram, recv: BPFProgram)? {
        guard plan.hooks != .kprobe else { return nil }
        guard plan.programs.count >= 2, plan.programs[0].section.contains("send"),
            plan.programs[1].section.contains("recv")
        else {
            throw BenchError("\(name): expected its send and recv programs first, got "
                             + plan.programs.map { "\($0.rawValue) (\($0.section))" }.joined(separator: ", "))
        }
        return (plan.programs[0], plan.programs[1])
    }
}

/// The plans to measure: every (hooks, read path) combination within what
/// was forced, started once each; those the kernel allows, best first.
struct PlanSurvey {
    var plans: [MeasuredPlan] = []
    /// "fexit+socket_hash", a combination each that the kernel refused to load or attach.
    var refused: [String] = []
    /// Combinations the design or this kernel's BTF rules out before trying
    /// ("raw_tp+storage_iterator": no typed socket pointer for socket storage).
    var impossible: [String] = []
    /// Why nothing can be measured (nil when some plan was allowed).
    var error: String?

    static func run(attachMode: BPFAttachMode, readPath: BPFReadPath) -> PlanSurvey {
        var survey = PlanSurvey()
        let kernel: KernelHooks, best: AttachPlan?
        do {
            kernel = try KernelHooks.probe()
            best = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel).plans.first
        } catch {
            survey.error = "\(error)"
            return survey
        }
        var reasons: [String] = []
        for hooks in AttachPlan.Hooks.allCases where attachMode == .auto || attachMode.rawValue == hooks.rawValue {
            for path in AttachPlan.ReadPath.allCases where readPath == .auto || readPath.rawValue == path.rawValue {
                let name = "\(hooks.rawValue)+\(path.rawValue)"
                let (mode, forcedPath) = (hooks.configValue, path.configValue)
                do {
                    _ = try AttachPlan.candidates(hooks: mode, readPath: forcedPath, kernel: kernel)
                } catch {
                    survey.impossible.append(name)
                    reasons.append("\(name): \(error)")
                    continue
                }
                do {
                    let plan = try TCPTracer.start(TCPTracer.Options(attachMode: mode, readPath: forcedPath)).plan  // detached again at once
                    survey.plans.append(MeasuredPlan(plan: plan, isFastPath: plan == best))
                } catch {
                    survey.refused.append(name)
                    reasons.append("\(name): \(error)")
                }
            }
        }
        if !reasons.isEmpty {
            FileHandle.standardError.write(Data(("  not measured:\n" + reasons.map { "    \($0)\n" }.joined()).utf8))
        }
        if survey.plans.isEmpty {
            survey.error = reasons.count == 1 ? reasons[0] : "no plan starts here: " + reasons.joined(separator: "; ")
        }
        return survey
    }

    /// For the notes under the table.
    var summary: String {
        guard error == nil else { return "no plan could be measured" }
        var parts = ["measured " + plans.map { "\($0.name) (\($0.role))" }.joined(separator: ", ")]
        if !refused.isEmpty { parts.append("refused by this kernel: " + refused.joined(separator: ", ")) }
        if !impossible.isEmpty { parts.append("not possible (design or BTF): " + impossible.joined(separator: ", ")) }
        return parts.joined(separator: "; ")
    }
}
