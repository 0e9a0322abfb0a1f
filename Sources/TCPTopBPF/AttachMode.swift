import CTCPTop
import TCPTopCore

extension TCPTracer {
    /// Which kernel hooks count the bytes: the config's own type.
    public typealias AttachMode = BPFAttachMode
}

/// What the running kernel offers, read from its BTF. Plain values, so that
/// the choice (`AttachPlan.choose`) is a pure function, testable anywhere.
public struct KernelHooks: Sendable, Equatable {
    public var release: String
    /// sock:sock_send_length and sock:sock_recv_length (Linux >= 6.3).
    public var sendRecvTracepoints: Bool
    /// tcp:tcp_destroy_sock (>= 4.15): every mode hands final counts over there.
    public var destroyTracepoint: Bool
    /// Argument counts of the functions, nil where the BTF has no such function.
    public var tcpSendmsgArguments: Int?
    public var tcpRecvmsgArguments: Int?
    public var tcpSendpageArguments: Int?

    public init(release: String, sendRecvTracepoints: Bool, destroyTracepoint: Bool,
                tcpSendmsgArguments: Int?, tcpRecvmsgArguments: Int?, tcpSendpageArguments: Int?) {
        self.release = release
        self.sendRecvTracepoints = sendRecvTracepoints
        self.destroyTracepoint = destroyTracepoint
        self.tcpSendmsgArguments = tcpSendmsgArguments
        self.tcpRecvmsgArguments = tcpRecvmsgArguments
        self.tcpSendpageArguments = tcpSendpageArguments
    }

    /// Reads /sys/kernel/btf/vmlinux (through libbpf).
    public static func probe() throws -> KernelHooks {
        guard let btf = btf__load_vmlinux_btf() else {
            throw TracerError("kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE programs cannot load")
        }
        defer { btf__free(btf) }
        func tracepoint(_ name: String) -> Bool {
            btf__find_by_name_kind(btf, "btf_trace_\(name)", UInt32(BTF_KIND_TYPEDEF)) >= 0
        }
        func arguments(_ function: String) -> Int? {
            // BTF_KIND_FUNC is both a macro and an enum case in the C headers:
            // ambiguous in Swift, so the kinds are spelled as their values.
            let kindFunc: UInt32 = 12, kindFuncProto: UInt16 = 13
            let id = btf__find_by_name_kind(btf, function, kindFunc)
            guard id >= 0, let function = btf__type_by_id(btf, UInt32(id)),
                  let proto = btf__type_by_id(btf, function.pointee.type),
                  btf_kind(proto) == kindFuncProto
            else { return nil }
            return Int(btf_vlen(proto))
        }
        return KernelHooks(
            release: kernelRelease(),
            sendRecvTracepoints: tracepoint("sock_send_length") && tracepoint("sock_recv_length"),
            destroyTracepoint: tracepoint("tcp_destroy_sock"),
            tcpSendmsgArguments: arguments("tcp_sendmsg"),
            tcpRecvmsgArguments: arguments("tcp_recvmsg"),
            tcpSendpageArguments: arguments("tcp_sendpage"))
    }
}

/// The programs to load for one attach mode, and why that mode.
public struct AttachPlan: Sendable, Equatable {
    /// tp_btf, fexit or kprobe: the value of the attach-mode self-metric.
    public var mode: TCPTracer.AttachMode
    /// Programs (by function name in bpf/tcptop.bpf.c) to load and attach;
    /// every other program is not loaded.
    public var programs: [String]
    /// One line for the log: the choice and what it was based on.
    public var reason: String

    /// Loaded in every mode: the close hook and the socket iterator.
    static let common = ["tcptop_destroy", "tcptop_dump"]
    /// Their kprobe-mode counterparts (no socket storage there).
    /// tcptop_kprobe_exit counts the missed returns of threads that end.
    static let kprobeCommon = ["tcptop_kprobe_destroy", "tcptop_kprobe_exit", "tcptop_kprobe_dump"]

    public static func choose(_ requested: TCPTracer.AttachMode, kernel: KernelHooks) throws -> AttachPlan {
        guard kernel.destroyTracepoint else {
            throw TracerError("kernel \(kernel.release) has no tcp_destroy_sock tracepoint (needs Linux >= 4.15)")
        }
        switch requested {
        case .tpBTF:
            guard kernel.sendRecvTracepoints else {
                throw TracerError(
                    "attach mode tp_btf: kernel \(kernel.release) has no sock_send_length/sock_recv_length tracepoints (Linux >= 6.3); use attach mode auto or fexit")
            }
            return tracepointPlan(reason: "attach mode tp_btf (configured)")
        case .fexit:
            return try fexitPlan(kernel: kernel, reason: "attach mode fexit (configured)")
        case .kprobe:
            return try kprobePlan(kernel: kernel, reason: "attach mode kprobe (configured)")
        case .auto:
            if kernel.sendRecvTracepoints {
                return tracepointPlan(reason: "attach mode tp_btf (auto: kernel \(kernel.release) has the sock_send_length/sock_recv_length tracepoints)")
            }
            do {
                return try fexitPlan(kernel: kernel, reason: "attach mode fexit (auto: kernel \(kernel.release) has no sock_send_length tracepoint, before Linux 6.3)")
            } catch {
                do {
                    return try kprobePlan(kernel: kernel, reason: "attach mode kprobe (auto: kernel \(kernel.release) has no sock_send_length tracepoint and no usable tcp_sendmsg/tcp_recvmsg for fexit)")
                } catch let kprobeError {
                    throw TracerError(
                        "kernel \(kernel.release) has no sock_send_length tracepoint and no usable tcp_sendmsg/tcp_recvmsg for fexit (\(error)) nor kprobe (\(kprobeError))")
                }
            }
        }
    }

    /// The last resort of `auto`: the kernel has what fexit needs in its BTF,
    /// but refused to load or attach the fexit programs (no BPF trampolines).
    public static func kprobeFallback(kernel: KernelHooks, fexitError: TracerError) throws -> AttachPlan {
        try kprobePlan(kernel: kernel, reason: "attach mode kprobe (auto: kernel \(kernel.release) has no sock_send_length tracepoint and refuses fexit: \(fexitError))")
    }

    /// kprobe/kretprobe pairs on the same functions. The return probes need
    /// no signature; the entry probe of tcp_recvmsg reads the flags (MSG_PEEK)
    /// from the 4th argument (5.19 on) or the 5th (before).
    private static func kprobePlan(kernel: KernelHooks, reason: String) throws -> AttachPlan {
        guard kernel.tcpSendmsgArguments != nil else {
            throw TracerError("attach mode kprobe: kernel \(kernel.release) has no tcp_sendmsg in its BTF")
        }
        guard let count = kernel.tcpRecvmsgArguments, (4...6).contains(count) else {
            throw TracerError("attach mode kprobe: kernel \(kernel.release) has \(describe(kernel.tcpRecvmsgArguments)) tcp_recvmsg (expected 4 to 6 arguments)")
        }
        var programs = ["tcptop_kprobe_send", "tcptop_kretprobe_send",
                        count == 6 ? "tcptop_kprobe_recv6" : "tcptop_kprobe_recv", "tcptop_kretprobe_recv"]
        var line = reason
        if kernel.tcpSendpageArguments != nil {
            programs += ["tcptop_kprobe_sendpage", "tcptop_kretprobe_sendpage"]
            line += "; tcp_sendpage hooked too"
        }
        return AttachPlan(mode: .kprobe, programs: programs + kprobeCommon, reason: line)
    }

    private static func tracepointPlan(reason: String) -> AttachPlan {
        AttachPlan(mode: .tpBTF, programs: ["tcptop_send", "tcptop_recv"] + common, reason: reason)
    }

    private static func fexitPlan(kernel: KernelHooks, reason: String) throws -> AttachPlan {
        guard kernel.tcpSendmsgArguments == 3 else {
            throw TracerError("attach mode fexit: kernel \(kernel.release) has \(describe(kernel.tcpSendmsgArguments)) tcp_sendmsg (expected 3 arguments)")
        }
        // One program per signature of tcp_recvmsg: (sk, msg, len, nonblock,
        // flags, addr_len) before 5.19, without nonblock since, and without
        // addr_len in recent kernels (6.18 has 4 arguments).
        guard let count = kernel.tcpRecvmsgArguments, (4...6).contains(count) else {
            throw TracerError("attach mode fexit: kernel \(kernel.release) has \(describe(kernel.tcpRecvmsgArguments)) tcp_recvmsg (expected 4 to 6 arguments)")
        }
        let receive = "tcptop_fexit_recv\(count)"
        var programs = ["tcptop_fexit_send", receive]
        var line = reason
        // sendfile/splice into TCP go through tcp_sendpage before Linux 6.5.
        if kernel.tcpSendpageArguments == 5 {
            programs.append("tcptop_fexit_sendpage")
            line += "; tcp_sendpage hooked too"
        }
        return AttachPlan(mode: .fexit, programs: programs + common, reason: line)
    }

    private static func describe(_ arguments: Int?) -> String {
        arguments.map { "a \($0)-argument" } ?? "no"
    }
}
