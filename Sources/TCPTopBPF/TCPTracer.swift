import CTCPTop
import Foundation
import TCPTopCore

/// Owns the loaded BPF object and its attached programs: open → set sizes
/// and settings → load → attach; `deinit` detaches and frees everything.
/// Not thread-safe: one reader at a time (the callers serialise).
public final class TCPTracer {
    public struct Options: Sendable {
        /// Connection ends the kernel map holds; past it bytes are counted as unattributed.
        public var mapCapacity: UInt32 = 65536
        /// Count only this process (0 = every process).
        public var targetPID: UInt32 = 0
        /// Count only tasks in this cgroup v2 directory (or below it).
        public var cgroupPath: String?
        /// Attach programs that return at once: the benchmark's cost floor.
        public var countNothing = false
        /// Which hooks to use; `auto` picks from what the kernel offers.
        public var attachMode: AttachMode = .auto
        /// What the kernel offers; nil reads it from the kernel's BTF. Tests
        /// pass a changed copy to take another kernel's path (auto falling
        /// back from fexit to kprobe).
        public var kernelHooks: KernelHooks?
        public init(mapCapacity: UInt32 = 65536, targetPID: UInt32 = 0, cgroupPath: String? = nil,
                    countNothing: Bool = false, attachMode: AttachMode = .auto, kernelHooks: KernelHooks? = nil) {
            self.mapCapacity = mapCapacity
            self.targetPID = targetPID
            self.cgroupPath = cgroupPath
            self.countNothing = countNothing
            self.attachMode = attachMode
            self.kernelHooks = kernelHooks
        }
    }

    /// How the programs are attached ("tp_btf", "fexit" or "kprobe"), for the
    /// attach-mode self-metric.
    public var attachMode: String { plan.mode.rawValue }
    /// One line for the log: the mode chosen and why.
    public var attachReason: String { plan.reason }
    public let plan: AttachPlan
    public let mapCapacity: UInt32

    let object: OpaquePointer
    private var links: [OpaquePointer] = []
    /// The socket iterator: every read creates one pass over it.
    var iteratorLink: OpaquePointer?
    let socketsFD: Int32
    /// kprobe mode's owner counters by socket address (its iterator's map).
    let socketOwnersFD: Int32
    let sharedConnectionsFD: Int32
    let closedCookiesFD: Int32
    let closedConnectionsFD: Int32
    let statsFD: Int32
    /// Labels already built, by connection: most reads see the same
    /// connections again, and building address text is the costly part.
    var labelCache: [ConnectionID: ConnectionLabels] = [:]
    /// The kernel's count of socket closes when `read()` last began.
    var closesAtLastRead: UInt64 = 0

    public static func start(_ options: Options, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> TCPTracer {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        try Preflight.checkCapabilities(statusText: status)
        let kernel = try options.kernelHooks ?? KernelHooks.probe()
        let plan = try AttachPlan.choose(options.attachMode, kernel: kernel)
        LibbpfLog.install(log)
        guard options.attachMode == .auto && plan.mode == .fexit else {
            return try start(options, plan: plan)
        }
        // BTF says fexit would fit, but only loading and attaching tell
        // whether the kernel has BPF trampolines: kprobe mode is the last resort.
        do {
            return try start(options, plan: plan)
        } catch let fexitError as TracerError {
            let fallback = try AttachPlan.kprobeFallback(kernel: kernel, fexitError: fexitError)
            do {
                return try start(options, plan: fallback)
            } catch {
                throw TracerError("kernel \(kernel.release) has no sock_send_length tracepoint, refuses fexit (\(fexitError)), and kprobe mode failed too (\(error))")
            }
        }
    }

    private static func start(_ options: Options, plan: AttachPlan) throws -> TCPTracer {
        guard let bytes = Data(base64Encoded: embeddedBPFObjectBase64) else {
            throw TracerError("the embedded BPF object is corrupt")
        }
        var openOptions = bpf_object_open_opts()
        openOptions.sz = MemoryLayout<bpf_object_open_opts>.stride
        let opened = bytes.withUnsafeBytes { raw in
            "tcptop".withCString { name -> OpaquePointer? in
                openOptions.object_name = name
                return bpf_object__open_mem(raw.baseAddress, raw.count, &openOptions)
            }
        }
        guard let object = opened else {
            throw TracerError.libbpf("opening the BPF object", code: -errno)
        }
        // From here on, the tracer owns the object and frees it in deinit.
        let tracer = try TCPTracer(object: object, options: options, plan: plan)
        try tracer.attachAll()
        return tracer
    }

    private init(object: OpaquePointer, options: Options, plan: AttachPlan) throws {
        self.object = object
        self.mapCapacity = options.mapCapacity
        self.plan = plan
        func map(_ name: String) throws -> OpaquePointer {
            guard let map = bpf_object__find_map_by_name(object, name) else {
                bpf_object__close(object)
                throw TracerError("the BPF object has no map \"\(name)\"")
            }
            return map
        }
        do {
            let sockets = try map("sockets")
            let socketOwners = try map("sk_owners")
            let calls = try map("calls")
            let shared = try map("conns")
            let closedCookies = try map("closed")
            let closedConnections = try map("closed_conns")
            let stats = try map("stats")
            let keySize = MemoryLayout<tcptop_conn_key>.size, valueSize = MemoryLayout<tcptop_conn_value>.size
            try Self.checkLayout(shared, key: keySize, value: valueSize)
            try Self.checkLayout(closedConnections, key: keySize, value: valueSize)
            try Self.checkLayout(sockets, key: MemoryLayout<Int32>.size, value: MemoryLayout<tcptop_sock_value>.size)
            try Self.checkLayout(socketOwners, key: MemoryLayout<UInt64>.size, value: MemoryLayout<tcptop_sock_value>.size)
            try Self.checkLayout(calls, key: MemoryLayout<UInt64>.size, value: MemoryLayout<tcptop_call>.size)
            // The closed maps take bursts of closes between two reads.
            let closedCapacity = UInt32(min(UInt64(options.mapCapacity) * 4, 1 << 24))
            // kprobe mode's preallocated maps take no memory in the other modes.
            let kprobeMode = plan.mode == .kprobe
            for (sized, capacity) in [(shared, options.mapCapacity), (closedCookies, closedCapacity),
                                      (closedConnections, closedCapacity),
                                      (socketOwners, kprobeMode ? options.mapCapacity : 1),
                                      (calls, kprobeMode ? bpf_map__max_entries(calls) : 1)] {
                let err = bpf_map__set_max_entries(sized, capacity)
                if err != 0 { throw TracerError.libbpf("setting the map capacity", code: err) }
            }
            try Self.setSettings(object: object, tcptop_settings(
                target_tgid: options.targetPID, filter_cgroup: options.cgroupPath == nil ? 0 : 1,
                socket_capacity: options.mapCapacity, count_nothing: options.countNothing ? 1 : 0))
            try Self.selectPrograms(object: object, plan.programs)
            let err = bpf_object__load(object)
            if err != 0 { throw Self.loadError(err, mode: plan.mode) }
            if let path = options.cgroupPath { try Self.setCgroupFilter(object: object, path: path) }
            socketsFD = bpf_map__fd(sockets)
            socketOwnersFD = bpf_map__fd(socketOwners)
            sharedConnectionsFD = bpf_map__fd(shared)
            closedCookiesFD = bpf_map__fd(closedCookies)
            closedConnectionsFD = bpf_map__fd(closedConnections)
            statsFD = bpf_map__fd(stats)
        } catch {
            bpf_object__close(object)
            throw error
        }
    }

    deinit {
        if let iteratorLink { bpf_link__destroy(iteratorLink) }
        for link in links { bpf_link__destroy(link) }
        bpf_object__close(object)
        LibbpfLog.install(nil)
    }

    private func attachAll() throws {
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            defer { program = bpf_object__next_program(object, current) }
            guard bpf_program__autoload(current) else { continue } // another attach mode's
            let name = String(cString: bpf_program__name(current))
            let section = String(cString: bpf_program__section_name(current))
            if section.hasPrefix("iter/") {
                iteratorLink = try attachIterator(current, name: name)
            } else {
                guard let link = bpf_program__attach(current) else {
                    let code = -errno
                    if section.hasPrefix("kprobe/") || section.hasPrefix("kretprobe/") {
                        let hint = code == -EPERM || code == -EACCES
                            ? "kprobe mode attaches through perf_event_open(2): it needs CAP_PERFMON, and a seccomp filter such as systemd's SystemCallFilter= must allow perf_event_open"
                            : "kprobe mode needs a kernel with kprobes: CONFIG_KPROBES and CONFIG_KPROBE_EVENTS"
                        throw TracerError("attaching \(name): \(libbpfErrorText(code)) (\(hint))")
                    }
                    throw TracerError.libbpf("attaching \(name)", code: code)
                }
                links.append(link)
            }
        }
    }

    /// A socket-storage iterator is bound to its map when attached.
    private func attachIterator(_ program: OpaquePointer, name: String) throws -> OpaquePointer {
        var linkInfo = bpf_iter_link_info()
        // kprobe mode iterates its hash of socket owners instead.
        linkInfo.map.map_fd = UInt32(plan.mode == .kprobe ? socketOwnersFD : socketsFD)
        var options = bpf_iter_attach_opts()
        // Up to the last field only: libbpf rejects a size that includes the
        // trailing padding unless those bytes are zero, and Swift does not
        // promise to zero padding ("bpf_iter_attach_opts has non-zero extra
        // bytes", seen on the static build).
        options.sz = MemoryLayout<bpf_iter_attach_opts>.offset(of: \.link_info_len)! + MemoryLayout<UInt32>.size
        options.link_info_len = UInt32(MemoryLayout<bpf_iter_link_info>.size)
        let link = withUnsafeMutablePointer(to: &linkInfo) { info -> OpaquePointer? in
            options.link_info = info
            return bpf_program__attach_iter(program, &options)
        }
        guard let link else { throw TracerError.libbpf("attaching \(name)", code: -errno) }
        return link
    }

    /// The key and value layout is declared once (bpf/tcptop_maps.h), but the
    /// object is checked anyway: a mismatch would silently give wrong numbers.
    private static func checkLayout(_ map: OpaquePointer, key: Int, value: Int) throws {
        let keySize = Int(bpf_map__key_size(map)), valueSize = Int(bpf_map__value_size(map))
        if keySize != key || valueSize != value {
            throw TracerError("BPF map layout mismatch: key \(keySize)/\(key) bytes, value \(valueSize)/\(value) bytes")
        }
    }

    private static func setSettings(object: OpaquePointer, _ settings: tcptop_settings) throws {
        guard let rodata = bpf_object__find_map_by_name(object, ".rodata") else {
            throw TracerError("the BPF object has no .rodata section for its settings")
        }
        var size = 0
        guard bpf_map__initial_value(rodata, &size) != nil, size == MemoryLayout<tcptop_settings>.size else {
            throw TracerError("the BPF object's .rodata is \(size) bytes, expected only tcptop_settings")
        }
        var copy = settings
        let err = bpf_map__set_initial_value(rodata, &copy, size)
        if err != 0 { throw TracerError.libbpf("setting the BPF settings", code: err) }
    }

    private static func setCgroupFilter(object: OpaquePointer, path: String) throws {
        let cgroupFD = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroupFD >= 0 else { throw TracerError("cgroup \(path): \(String(cString: strerror(errno)))") }
        defer { close(cgroupFD) }
        guard let map = bpf_object__find_map_by_name(object, "cgroup_filter") else {
            throw TracerError("the BPF object has no map \"cgroup_filter\"")
        }
        var key: UInt32 = 0
        var value = UInt32(cgroupFD)
        let err = bpf_map_update_elem(bpf_map__fd(map), &key, &value, UInt64(BPF_ANY))
        if err != 0 { throw TracerError.libbpf("cgroup \(path) (is it a cgroup v2 directory?)", code: err) }
    }

    /// Only the plan's programs are loaded: the others' hooks may not exist
    /// in this kernel (libbpf resolves attach targets only for loaded programs).
    private static func selectPrograms(object: OpaquePointer, _ names: [String]) throws {
        var found = Set<String>()
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            let name = String(cString: bpf_program__name(current))
            let wanted = names.contains(name)
            if wanted { found.insert(name) }
            let err = bpf_program__set_autoload(current, wanted)
            if err != 0 { throw TracerError.libbpf("selecting program \(name)", code: err) }
            program = bpf_object__next_program(object, current)
        }
        if let missing = names.first(where: { !found.contains($0) }) {
            throw TracerError("the BPF object has no program \"\(missing)\"")
        }
    }

    private static func loadError(_ code: Int32, mode: AttachMode) -> TracerError {
        if mode == .fexit && (code == -EPERM || code == -EOPNOTSUPP || code == -524 /* the kernel's ENOTSUPP */) {
            // Capabilities were checked before: this kernel refuses BPF
            // trampolines (no JIT support for them, or a lockdown/LSM policy).
            return TracerError(
                "loading fexit programs: \(libbpfErrorText(code)) (this kernel refuses fentry/fexit programs; try attach mode auto or tp_btf)")
        }
        if code == -EPERM || code == -EACCES {
            return TracerError(
                "loading BPF programs: \(libbpfErrorText(code)) (needs CAP_BPF and CAP_PERFMON, or root; a seccomp filter or lockdown may also forbid bpf())")
        }
        return TracerError.libbpf("loading BPF programs", code: code)
    }
}

/// Routes libbpf's messages to the caller's logger. libbpf has one global
/// print callback, so this is a process-wide setting.
enum LibbpfLog {
    nonisolated(unsafe) private static var sink: (@Sendable (String) -> Void)?

    static func install(_ newSink: (@Sendable (String) -> Void)?) {
        sink = newSink
        tcptop_set_libbpf_logger(newSink == nil ? nil : { level, message in
            // Debug chatter is dropped; warnings explain load failures.
            guard level <= Int32(LIBBPF_INFO.rawValue), let message else { return }
            let text = String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
            LibbpfLog.sink?("libbpf: " + text)
        })
    }
}
