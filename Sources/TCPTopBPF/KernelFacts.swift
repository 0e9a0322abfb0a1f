import CTCPTop
import TCPTopCore

extension TCPTracer {
    /// Which kernel hooks count the bytes: the config's own type.
    public typealias AttachMode = BPFAttachMode
    /// How user space reads the counters: the config's own type.
    public typealias ReadPath = BPFReadPath
}

/// What the running kernel's BTF says it has. Plain values, so that the list
/// of plans to try (`AttachPlan.candidates`) is a pure function, testable
/// anywhere. What the kernel *allows* is not in its BTF: that is found out
/// by loading (TCPTracer.start).
public struct KernelHooks: Sendable, Equatable {
    public var release: String
    /// sock:sock_send_length and sock:sock_recv_length (Linux >= 6.3).
    public var sendRecvTracepoints: Bool
    /// tcp:tcp_destroy_sock (>= 4.15): every plan hands final counts over there.
    public var destroyTracepoint: Bool
    /// Argument counts of the functions, nil where the BTF has no such function.
    public var tcpSendmsgArguments: Int?
    public var tcpRecvmsgArguments: Int?
    public var tcpSendpageArguments: Int?
    /// The socket-storage map iterator target (bpf_iter_bpf_sk_storage_map).
    public var storageIterator: Bool
    /// tcp:tcp_retransmit_skb's arguments (sk, skb; and err since 6.13), nil
    /// where the kernel has no such tracepoint (before 4.16).
    public var retransmitArguments: Int?
    /// sock:inet_sock_set_state (>= 4.16): connection outcomes and durations.
    public var stateTracepoint: Bool
    /// tcp:tcp_send_reset and tcp:tcp_receive_reset (>= 4.15).
    public var resetTracepoints: Bool

    public init(release: String, sendRecvTracepoints: Bool, destroyTracepoint: Bool,
                tcpSendmsgArguments: Int?, tcpRecvmsgArguments: Int?, tcpSendpageArguments: Int?,
                storageIterator: Bool = true, retransmitArguments: Int? = nil,
                stateTracepoint: Bool = false, resetTracepoints: Bool = false) {
        self.release = release
        self.sendRecvTracepoints = sendRecvTracepoints
        self.destroyTracepoint = destroyTracepoint
        self.tcpSendmsgArguments = tcpSendmsgArguments
        self.tcpRecvmsgArguments = tcpRecvmsgArguments
        self.tcpSendpageArguments = tcpSendpageArguments
        self.storageIterator = storageIterator
        self.retransmitArguments = retransmitArguments
        self.stateTracepoint = stateTracepoint
        self.resetTracepoints = resetTracepoints
    }

    /// Reads /sys/kernel/btf/vmlinux (through libbpf).
    public static func probe() throws -> KernelHooks {
        guard let btf = btf__load_vmlinux_btf() else {
            throw TracerError("kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE programs cannot load")
        }
        defer { btf__free(btf) }
        // BTF_KIND_FUNC is both a macro and an enum case in the C headers:
        // ambiguous in Swift, so the kinds are spelled as their values.
        let kindFunc: UInt32 = 12, kindFuncProto: UInt16 = 13
        func tracepoint(_ name: String) -> Bool {
            btf__find_by_name_kind(btf, "btf_trace_\(name)", UInt32(BTF_KIND_TYPEDEF)) >= 0
        }
        /// A tracepoint's arguments: its btf_trace_ typedef is a pointer to a
        /// prototype whose first argument is the probe's data pointer.
        func tracepointArguments(_ name: String) -> Int? {
            let id = btf__find_by_name_kind(btf, "btf_trace_\(name)", UInt32(BTF_KIND_TYPEDEF))
            guard id >= 0, let typedef = btf__type_by_id(btf, UInt32(id)),
                  let pointer = btf__type_by_id(btf, typedef.pointee.type),
                  let proto = btf__type_by_id(btf, pointer.pointee.type), btf_kind(proto) == kindFuncProto
            else { return nil }
            return Int(btf_vlen(proto)) - 1
        }
        func arguments(_ function: String) -> Int? {
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
            tcpSendpageArguments: arguments("tcp_sendpage"),
            storageIterator: btf__find_by_name_kind(btf, "bpf_iter_bpf_sk_storage_map", kindFunc) >= 0,
            retransmitArguments: tracepointArguments("tcp_retransmit_skb"),
            stateTracepoint: tracepoint("inet_sock_set_state"),
            resetTracepoints: tracepoint("tcp_send_reset") && tracepoint("tcp_receive_reset"))
    }
}
