import TCPTopCore

/// One way of counting: the hooks that see the bytes, the read path that
/// hands the counters to user space, and the programs that makes.
public struct AttachPlan: Sendable, Equatable {
    /// Program kinds for the send/receive hooks, best first.
    public enum Hooks: String, CaseIterable, Sendable {
        case tpBTF = "tp_btf", rawTP = "raw_tp", fexit, kprobe
        /// Typed socket pointers: the only hooks that can use socket storage.
        var typed: Bool { self == .tpBTF || self == .fexit }
    }

    /// How user space reads the counters, best first.
    public enum ReadPath: String, CaseIterable, Sendable {
        case storageIterator = "storage_iterator", storageArray = "storage_array", socketHash = "socket_hash"
        /// Counters found through socket storage: needs typed socket pointers.
        var usesSocketStorage: Bool { self != .socketHash }
    }

    public var hooks: Hooks
    public var readPath: ReadPath
    /// The kind of the close hook (and kprobe's thread-exit hook): tp_btf,
    /// or raw_tp where the kernel refuses tp_btf.
    public var closeHooks: Hooks
    public var programs: [BPFProgram]

    /// "tp_btf+storage_iterator", for logs and errors.
    public var name: String {
        let base = "\(hooks.rawValue)+\(readPath.rawValue)"
        return closeHooks == hooks || closeHooks == .tpBTF ? base : "\(base) (close hook raw_tp)"
    }

    /// Every plan the kernel's BTF makes possible within what was asked,
    /// best first; and why the others are not possible, a line each. At
    /// start the tracer tries them in order and takes the first that the
    /// kernel allows to load and attach.
    public static func candidates(hooks requested: BPFAttachMode, readPath requestedPath: BPFReadPath,
                                  kernel: KernelHooks) throws -> (plans: [AttachPlan], impossible: [String]) {
        guard kernel.destroyTracepoint else {
            throw TracerError("kernel \(kernel.release) has no tcp_destroy_sock tracepoint (needs Linux >= 4.15)")
        }
        var plans: [AttachPlan] = [], impossible: [String] = []
        for hooks in Hooks.allCases where requested == .auto || requested.rawValue == hooks.rawValue {
            let counting: [BPFProgram]
            do { counting = try countingPrograms(hooks, kernel: kernel) } catch {
                impossible.append("\(error)")
                continue
            }
            for path in ReadPath.allCases where requestedPath == .auto || requestedPath.rawValue == path.rawValue {
                if path.usesSocketStorage {
                    guard hooks.typed else {
                        // A design fact, not the kernel's: said only when both were asked for.
                        if requested != .auto && requestedPath != .auto {
                            impossible.append("\(hooks.rawValue) hooks cannot use socket storage (no typed socket pointer)")
                        }
                        continue
                    }
                    guard path != .storageIterator || kernel.storageIterator else {
                        impossible.append("kernel \(kernel.release) has no socket-storage iterator")
                        continue
                    }
                }
                let closeKinds: [Hooks] = switch (hooks, path) {
                case (.tpBTF, _), (_, .storageIterator), (_, .storageArray): [.tpBTF]
                case (.rawTP, _): [.rawTP]
                default: [.tpBTF, .rawTP]
                }
                for close in closeKinds {
                    var programs = counting + [close == .tpBTF ? .destroy : .rawDestroy]
                    programs += retransmitPrograms(close, kernel: kernel) + lifecyclePrograms(close, kernel: kernel)
                    if hooks == .kprobe { programs.append(close == .tpBTF ? .threadExit : .rawThreadExit) }
                    if path == .storageIterator { programs.append(.dump) }
                    plans.append(AttachPlan(hooks: hooks, readPath: path, closeHooks: close, programs: programs))
                }
            }
        }
        if plans.isEmpty {
            let asked = requested == .auto && requestedPath == .auto
                ? "" : " with attach mode \(requested.rawValue) and read path \(requestedPath.rawValue)"
            throw TracerError("no way to count TCP bytes on kernel \(kernel.release)\(asked): "
                              + impossible.joined(separator: "; "))
        }
        return (plans, impossible)
    }

    /// The retransmit hook, of the close hook's kind: one program per
    /// signature of tcp:tcp_retransmit_skb; none where the kernel lacks it.
    static func retransmitPrograms(_ close: Hooks, kernel: KernelHooks) -> [BPFProgram] {
        switch (kernel.retransmitArguments, close) {
        case (2, .tpBTF): [.retransmit]
        case (3, .tpBTF): [.retransmitErr]
        case (2, _): [.rawRetransmit]
        case (3, _): [.rawRetransmitErr]
        default: []
        }
    }

    /// The state-change and reset hooks, of the close hook's kind, where the
    /// kernel has their tracepoints.
    static func lifecyclePrograms(_ close: Hooks, kernel: KernelHooks) -> [BPFProgram] {
        let typed = close == .tpBTF
        return (kernel.stateTracepoint ? [typed ? .state : .rawState] : [])
            + (kernel.resetTracepoints ? (typed ? [.sendReset, .receiveReset] : [.rawSendReset, .rawReceiveReset]) : [])
    }

    /// The send/receive programs of one hook kind, from the kernel's BTF.
    private static func countingPrograms(_ hooks: Hooks, kernel: KernelHooks) throws -> [BPFProgram] {
        switch hooks {
        case .tpBTF, .rawTP:
            guard kernel.sendRecvTracepoints else {
                throw TracerError("\(hooks.rawValue): kernel \(kernel.release) has no sock_send_length/sock_recv_length tracepoints (Linux >= 6.3)")
            }
            return hooks == .tpBTF ? [.send, .recv] : [.rawSend, .rawRecv]
        case .fexit:
            guard kernel.tcpSendmsgArguments == 3 else {
                throw TracerError("fexit: kernel \(kernel.release) has \(describe(kernel.tcpSendmsgArguments)) tcp_sendmsg (expected 3 arguments)")
            }
            // One program per signature of tcp_recvmsg: (sk, msg, len, nonblock,
            // flags, addr_len) before 5.19, without nonblock since, and without
            // addr_len in recent kernels (6.18 has 4 arguments).
            let receive: [Int: BPFProgram] = [4: .fexitRecv4, 5: .fexitRecv5, 6: .fexitRecv6]
            guard let count = kernel.tcpRecvmsgArguments, let recv = receive[count] else {
                throw TracerError("fexit: kernel \(kernel.release) has \(describe(kernel.tcpRecvmsgArguments)) tcp_recvmsg (expected 4 to 6 arguments)")
            }
            // sendfile/splice into TCP go through tcp_sendpage before Linux 6.5.
            return [.fexitSend, recv] + (kernel.tcpSendpageArguments == 5 ? [.fexitSendpage] : [])
        case .kprobe:
            // The return probes need no signature; the entry probe of
            // tcp_recvmsg reads the flags (MSG_PEEK) from the 4th argument
            // (5.19 on) or the 5th (before).
            guard kernel.tcpSendmsgArguments != nil else {
                throw TracerError("kprobe: kernel \(kernel.release) has no tcp_sendmsg in its BTF")
            }
            guard let count = kernel.tcpRecvmsgArguments, (4...6).contains(count) else {
                throw TracerError("kprobe: kernel \(kernel.release) has \(describe(kernel.tcpRecvmsgArguments)) tcp_recvmsg (expected 4 to 6 arguments)")
            }
            return [.kprobeSend, .kretprobeSend, count == 6 ? .kprobeRecv6 : .kprobeRecv, .kretprobeRecv]
                + (kernel.tcpSendpageArguments != nil ? [.kprobeSendpage, .kretprobeSendpage] : [])
        }
    }

    private static func describe(_ arguments: Int?) -> String {
        arguments.map { "a \($0)-argument" } ?? "no"
    }
}

/// Why the kernel would not take a plan: one of its programs, loaded alone,
/// was refused (a program kind the kernel does not allow, or a helper or
/// function it does not have), or could not be attached.
public struct KernelRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var program: BPFProgram
    public var stage: Stage
    /// The errno, negative as libbpf returns it.
    public var code: Int32
    public enum Stage: String, Sendable { case load, attach }

    public init(program: BPFProgram, stage: Stage, code: Int32) {
        self.program = program
        self.stage = stage
        self.code = code
    }

    /// The refused program's kind.
    public var kind: String { program.kind }

    /// A refusal of the whole program kind (a policy: every program of that
    /// kind will fail the same way), not of this one program.
    public var refusesKind: Bool { [-1 /* EPERM */, -95 /* EOPNOTSUPP */, -524 /* ENOTSUPP */].contains(code) }

    /// The errors that mean "this kernel does not allow or have it", as
    /// opposed to a bug of ours (a verifier rejection, EACCES) or a
    /// resource limit (ENOMEM): only these make the tracer try the next plan.
    static func isRefusal(_ code: Int32) -> Bool {
        [-1 /* EPERM */, -2 /* ENOENT */, -3 /* ESRCH */, -22 /* EINVAL */, -95 /* EOPNOTSUPP */,
         -524 /* ENOTSUPP */].contains(code)
    }

    public var description: String {
        let verb = stage == .load ? "refused to load" : "could not attach"
        var text = "the kernel \(verb) \(kind) program \(program.rawValue) (\(libbpfErrorText(code)))"
        if kind == "kprobe" || kind == "kretprobe" {
            text += code == -1 || code == -13
                ? " (kprobes attach through perf_event_open(2): it needs CAP_PERFMON, and a seccomp filter must allow it)"
                : stage == .attach ? " (kprobes need CONFIG_KPROBES and CONFIG_KPROBE_EVENTS)" : ""
        }
        return text
    }
}

/// Picks, among the candidate plans, the next one to try after some were
/// refused: pure, so that the stepping down is tested without a kernel.
public struct PlanSelection: Sendable {
    public private(set) var remaining: [AttachPlan]
    /// "tp_btf+storage_iterator: the kernel refused ...", a line per plan given up.
    public private(set) var refusals: [String] = []
    private var refusedKinds = Set<String>()
    private var refusedPrograms = Set<String>()

    public init(_ plans: [AttachPlan]) { remaining = plans }

    /// The next plan to try, skipping those that use a refused kind or program.
    public mutating func next() -> AttachPlan? {
        while !remaining.isEmpty {
            let plan = remaining.removeFirst()
            if !plan.programs.contains(where: { refusedKinds.contains($0.kind) || refusedPrograms.contains(Self.key($0, plan)) }) {
                return plan
            }
        }
        return nil
    }

    public mutating func refused(_ plan: AttachPlan, because refusal: KernelRefusal) {
        refusals.append("\(plan.name): \(refusal)")
        if refusal.refusesKind { refusedKinds.insert(refusal.kind) }
        refusedPrograms.insert(Self.key(refusal.program, plan))
    }

    /// A program is verified with the plan's read path compiled in
    /// (settings.socket_hash): the same program may load on one path only.
    private static func key(_ program: BPFProgram, _ plan: AttachPlan) -> String {
        "\(program.rawValue)/\(plan.readPath.rawValue)"
    }
}

extension AttachPlan.Hooks {
    /// The `bpf.attach_mode` value that forces these hooks (the names are
    /// the config's, which a test checks).
    public var configValue: BPFAttachMode { BPFAttachMode(rawValue: rawValue)! }
}

extension AttachPlan.ReadPath {
    /// The `bpf.read_path` value that forces this read path.
    public var configValue: BPFReadPath { BPFReadPath(rawValue: rawValue)! }
}

extension BPFProgram {
    /// The program kind, from its ELF section ("tp_btf", "iter", ...).
    public var kind: String { String(section.prefix { $0 != "/" }) }
}
