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
        /// Which hooks to use; `auto` takes the best the kernel allows.
        public var attachMode: AttachMode = .auto
        /// How to read the counters; `auto` takes the best the kernel allows.
        public var readPath: ReadPath = .auto
        /// What the kernel's BTF offers; nil reads it from the kernel. Tests
        /// pass a changed copy to take another kernel's path.
        public var kernelHooks: KernelHooks?
        public init(mapCapacity: UInt32 = 65536, targetPID: UInt32 = 0, cgroupPath: String? = nil,
                    countNothing: Bool = false, attachMode: AttachMode = .auto, readPath: ReadPath = .auto,
                    kernelHooks: KernelHooks? = nil) {
            self.mapCapacity = mapCapacity
            self.targetPID = targetPID
            self.cgroupPath = cgroupPath
            self.countNothing = countNothing
            self.attachMode = attachMode
            self.readPath = readPath
            self.kernelHooks = kernelHooks
        }
    }

    /// The hooks ("tp_btf", "raw_tp", "fexit" or "kprobe"), for the self-metric.
    public var attachMode: String { plan.hooks.rawValue }
    /// The read path ("storage_iterator" or "socket_hash"), for the self-metric.
    public var readPath: String { plan.readPath.rawValue }
    /// One line for the log: the plan chosen and why.
    public let attachReason: String
    public let plan: AttachPlan
    /// Whether retransmits are counted: the kernel has tcp:tcp_retransmit_skb.
    public var countsRetransmits: Bool {
        plan.programs.contains { [.retransmit, .retransmitErr, .rawRetransmit, .rawRetransmitErr].contains($0) }
    }
    /// The health families this kernel feeds: the RTT on every read path,
    /// the others where their tracepoints exist.
    public var healthFamilies: HealthFamilies {
        var families: HealthFamilies = .rtt
        if countsRetransmits { families.insert(.retransmits) }
        if seesStateChanges { families.insert(.lifecycle) }
        if countsResets { families.insert(.resets) }
        return families
    }
    /// Whether connection outcomes and durations are seen (sock:inet_sock_set_state).
    public var seesStateChanges: Bool { plan.programs.contains { $0 == .state || $0 == .rawState } }
    /// Whether resets are counted (tcp:tcp_send_reset, tcp:tcp_receive_reset).
    public var countsResets: Bool { plan.programs.contains { $0 == .sendReset || $0 == .rawSendReset } }
    /// Why a health family is not served, a line each (empty: all are).
    public var healthGaps: [String] {
        (countsRetransmits ? [] : ["kernel \(kernelRelease()) has no tcp:tcp_retransmit_skb tracepoint (Linux >= 4.16): retransmits are not counted"])
            + (seesStateChanges ? [] : ["kernel \(kernelRelease()) has no sock:inet_sock_set_state tracepoint (Linux >= 4.16): connection outcomes and durations are not counted"])
            + (countsResets ? [] : ["kernel \(kernelRelease()) has no tcp:tcp_send_reset/tcp_receive_reset tracepoints (Linux >= 4.15): resets are not counted"])
    }
    public let mapCapacity: UInt32

    let object: OpaquePointer
    private var links: [OpaquePointer] = []
    /// The socket-storage iterator: every read creates one pass over it.
    var iteratorLink: OpaquePointer?
    /// The socket storage the iterator walks (storage_iterator).
    let socketsFD: Int32
    /// Owner counters by socket address (the socket-hash read path).
    let socketOwnersFD: Int32
    let sharedConnectionsFD: Int32
    let closedCookiesFD: Int32
    let closedConnectionsFD: Int32
    let statsFD: Int32
    /// Names of the cgroups ends were first seen in, by cgroup id.
    let cgroupNamesFD: Int32
    /// storage_array: the slots, mapped into this process, and the maps
    /// that say which are in use.
    let slots: SlotMapping?
    let freeSlotsFD: Int32
    let slotsTakenFD: Int32
    /// Labels already built, by connection: most reads see the same
    /// connections again, and building address text is the costly part.
    var labelCache: [ConnectionID: ConnectionLabels] = [:]
    /// One array per process name, shared by its connections' labels
    /// (48 bytes less per connection end); emptied past 4096 names.
    var commNames: Set<[UInt8]> = []
    /// The kernel's count of socket closes when the last `read()` began.
    var closesAtLastRead: UInt64 = 0
    /// Retransmits of sockets that closed with a pending owner (no process
    /// ever moved bytes on them), taken from the kernel so far.
    var unownedRetransmits: UInt64 = 0

    /// Tries the plans the kernel's BTF allows, best first, and keeps the
    /// first that loads and attaches. A plan is given up only when the
    /// kernel refuses one of its programs (`KernelRefusal`); any other
    /// failure is an error.
    public static func start(_ options: Options, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> TCPTracer {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        try Preflight.checkCapabilities(statusText: status)
        try Preflight.checkBPFSyscall()
        let kernel = try options.kernelHooks ?? KernelHooks.probe()
        let (plans, impossible) = try AttachPlan.candidates(
            hooks: options.attachMode, readPath: options.readPath, kernel: kernel)
        LibbpfLog.install(log)
        var selection = PlanSelection(plans)
        while let plan = selection.next() {
            do {
                let why = reason(options, kernel: kernel, impossible: impossible, refusals: selection.refusals)
                return try start(options, plan: plan, reason: "\(plan.name) (\(why))")
            } catch let refusal as KernelRefusal {
                log("libbpf: giving up \(plan.name): \(refusal)")
                selection.refused(plan, because: refusal)
            }
        }
        throw TracerError("no way to count TCP bytes on kernel \(kernel.release): every plan was refused: "
                          + (selection.refusals + impossible).joined(separator: "; "))
    }

    /// Why the plan about to be tried is taken: forced, or auto's best, or
    /// what the kernel refused before it.
    private static func reason(_ options: Options, kernel: KernelHooks, impossible: [String], refusals: [String]) -> String {
        let forced = options.attachMode != .auto || options.readPath != .auto
        if !refusals.isEmpty { return "\(forced ? "configured" : "auto"), after: " + refusals.joined(separator: "; ") }
        if forced { return "configured" }
        return "auto: the first plan kernel \(kernel.release) allows"
            + (impossible.isEmpty ? "" : "; not possible here: " + impossible.joined(separator: "; "))
    }

    private static func start(_ options: Options, plan: AttachPlan, reason: String) throws -> TCPTracer {
        let object = try openObject()
        // From here on, the tracer owns the object and frees it in deinit.
        let tracer: TCPTracer
        do {
            tracer = try TCPTracer(object: object, options: options, plan: plan, reason: reason)
        } catch let error as LoadFailure {
            // Which program the kernel refuses is found by loading each alone.
            if let refusal = try findRefusal(plan, options: options) { throw refusal }
            throw error.tracerError
        }
        try tracer.attachAll()
        return tracer
    }

    private static func openObject() throws -> OpaquePointer {
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
        return object
    }

    /// bpf_object__load failed: its code, and the text if no single program is to blame.
    struct LoadFailure: Error {
        var code: Int32
        var tracerError: TracerError
    }

    private init(object: OpaquePointer, options: Options, plan: AttachPlan, reason: String) throws {
        self.object = object
        self.mapCapacity = options.mapCapacity
        self.plan = plan
        self.attachReason = reason
        do {
            let maps = try Self.prepare(object, options: options, plan: plan, capacity: options.mapCapacity)
            let err = bpf_object__load(object)
            if err != 0 {
                throw LoadFailure(code: err, tracerError: TracerError.libbpf("loading BPF programs (\(plan.name))", code: err))
            }
            if let path = options.cgroupPath { try Self.setCgroupFilter(maps[.cgroupFilter]!, path: path) }
            socketsFD = bpf_map__fd(maps[.sockets]!)
            socketOwnersFD = bpf_map__fd(maps[.skOwners]!)
            sharedConnectionsFD = bpf_map__fd(maps[.conns]!)
            closedCookiesFD = bpf_map__fd(maps[.closed]!)
            closedConnectionsFD = bpf_map__fd(maps[.closedConns]!)
            statsFD = bpf_map__fd(maps[.stats]!)
            cgroupNamesFD = bpf_map__fd(maps[.cgroupNames]!)
            freeSlotsFD = bpf_map__fd(maps[.freeSlots]!)
            slotsTakenFD = bpf_map__fd(maps[.slotsTaken]!)
            slots = plan.readPath == .storageArray ? try SlotMapping(map: maps[.slots]!) : nil
            if let slots { try Self.pushEverySlot(count: slots.count, freeSlotsFD: freeSlotsFD) }
        } catch {
            bpf_object__close(object)
            throw error
        }
    }

    /// Everything before load: layouts checked, maps sized, settings set,
    /// only the plan's programs left to load.
    private static func prepare(_ object: OpaquePointer, options: Options, plan: AttachPlan,
                                capacity: UInt32) throws -> [BPFMap: OpaquePointer] {
        var maps: [BPFMap: OpaquePointer] = [:]
        for map in BPFMap.allCases {
            guard let found = bpf_object__find_map_by_name(object, map.rawValue) else {
                throw TracerError("the BPF object has no map \"\(map.rawValue)\"")
            }
            maps[map] = found
        }
        let keySize = MemoryLayout<tcptop_conn_key>.size, valueSize = MemoryLayout<tcptop_conn_value>.size
        try checkLayout(maps[.conns]!, key: keySize, value: valueSize)
        try checkLayout(maps[.closedConns]!, key: keySize, value: valueSize)
        try checkLayout(maps[.sockets]!, key: MemoryLayout<Int32>.size, value: MemoryLayout<tcptop_sock_value>.size)
        try checkLayout(maps[.skOwners]!, key: MemoryLayout<UInt64>.size, value: MemoryLayout<tcptop_sock_value>.size)
        try checkLayout(maps[.calls]!, key: MemoryLayout<UInt64>.size, value: MemoryLayout<tcptop_call>.size)
        try checkLayout(maps[.slots]!, key: MemoryLayout<UInt32>.size, value: MemoryLayout<tcptop_slot>.size)
        try checkLayout(maps[.freeSlots]!, key: 0, value: MemoryLayout<UInt32>.size)
        // The closed maps take bursts of closes between two reads.
        let closedCapacity = UInt32(min(UInt64(capacity) * 4, 1 << 24))
        // Preallocated maps another plan uses take one entry.
        let socketHash = plan.readPath == .socketHash, array = plan.readPath == .storageArray
        let slotCount = Self.slotCount(capacity: capacity)
        let sizes: [(BPFMap, UInt32)] = [
            (.conns, capacity), (.closed, closedCapacity), (.closedConns, closedCapacity),
            (.skOwners, socketHash ? capacity : 1),
            (.slots, array ? slotCount : 1), (.freeSlots, array ? slotCount : 1),
            (.calls, plan.hooks == .kprobe ? bpf_map__max_entries(maps[.calls]!) : 1),
        ]
        for (map, size) in sizes {
            let err = bpf_map__set_max_entries(maps[map]!, size)
            if err != 0 { throw TracerError.libbpf("setting the capacity of map \(map.rawValue)", code: err) }
        }
        let readPath: tcptop_read_path = switch plan.readPath {
        case .storageIterator: TCPTOP_READ_STORAGE_ITERATOR
        case .storageArray: TCPTOP_READ_STORAGE_ARRAY
        case .socketHash: TCPTOP_READ_SOCKET_HASH
        }
        try setSettings(object: object, tcptop_settings(
            target_tgid: options.targetPID, filter_cgroup: options.cgroupPath == nil ? 0 : 1,
            socket_capacity: capacity, count_nothing: options.countNothing ? 1 : 0,
            read_path: readPath.rawValue, cpus: UInt32(max(libbpf_num_possible_cpus(), 1))))
        try selectPrograms(object: object, Set(plan.programs))
        return maps
    }

    /// storage_array: the slots of closed sockets wait for the next read, so
    /// there are twice as many slots as sockets tracked at once.
    static func slotCount(capacity: UInt32) -> UInt32 { UInt32(min(UInt64(capacity) * 2, 1 << 24)) }

    /// storage_array, before the programs attach: every slot on the free
    /// stack, the highest first, so that never-used slots come off it in
    /// order and the slots in use stay below the kernel's "slots_taken"
    /// count (one pool for every CPU; about 0.75 µs a slot, 0.1 s for the
    /// default capacity).
    private static func pushEverySlot(count: Int, freeSlotsFD: Int32) throws {
        for slot in (0..<UInt32(count)).reversed() {
            var index = slot
            let err = bpf_map_update_elem(freeSlotsFD, nil, &index, UInt64(BPF_ANY))
            if err != 0 { throw TracerError.libbpf("filling the free slots", code: err) }
        }
    }

    /// Loads each of the plan's programs alone, in a fresh object with small
    /// maps, to find the one the kernel refuses. Nil when each loads alone
    /// (then the failure is not a refusal of a program: an error).
    private static func findRefusal(_ plan: AttachPlan, options: Options) throws -> KernelRefusal? {
        for program in plan.programs {
            let object = try openObject()
            defer { bpf_object__close(object) }
            var alone = plan
            alone.programs = [program]
            _ = try prepare(object, options: options, plan: alone, capacity: 1)
            let err = bpf_object__load(object)
            if err != 0 {
                guard KernelRefusal.isRefusal(err) else {
                    throw TracerError("loading \(program.rawValue) (\(plan.name)): \(libbpfErrorText(err))"
                                      + (err == -EACCES ? " (the verifier rejected it; --log.level=debug shows its log)" : ""))
                }
                return KernelRefusal(program: program, stage: .load, code: err)
            }
        }
        return nil
    }

    deinit {
        if let iteratorLink { bpf_link__destroy(iteratorLink) }
        for link in links { bpf_link__destroy(link) }
        bpf_object__close(object)
        LibbpfLog.install(nil)
    }

    private func attachAll() throws {
        for program in plan.programs {
            guard let handle = bpf_object__find_program_by_name(object, program.rawValue) else {
                throw TracerError("the BPF object has no program \"\(program.rawValue)\"")
            }
            if program == .dump {
                iteratorLink = try attachIterator(handle, program: program)
                continue
            }
            guard let link = bpf_program__attach(handle) else { throw Self.attachFailure(program, code: -errno) }
            links.append(link)
        }
    }

    /// The socket-storage iterator is bound to its map when attached.
    private func attachIterator(_ handle: OpaquePointer, program: BPFProgram) throws -> OpaquePointer {
        var linkInfo = bpf_iter_link_info()
        linkInfo.map.map_fd = UInt32(socketsFD)
        var options = bpf_iter_attach_opts()
        // Up to the last field only: libbpf rejects a size that includes the
        // trailing padding unless those bytes are zero, and Swift does not
        // promise to zero padding ("bpf_iter_attach_opts has non-zero extra
        // bytes", seen on the static build).
        options.sz = MemoryLayout<bpf_iter_attach_opts>.offset(of: \.link_info_len)! + MemoryLayout<UInt32>.size
        options.link_info_len = UInt32(MemoryLayout<bpf_iter_link_info>.size)
        let link = withUnsafeMutablePointer(to: &linkInfo) { info -> OpaquePointer? in
            options.link_info = info
            return bpf_program__attach_iter(handle, &options)
        }
        guard let link else { throw Self.attachFailure(program, code: -errno) }
        return link
    }

    /// An attach that failed: a refusal (the next plan is tried) or an error.
    private static func attachFailure(_ program: BPFProgram, code: Int32) -> Error {
        KernelRefusal.isRefusal(code) ? KernelRefusal(program: program, stage: .attach, code: code)
            : TracerError.libbpf("attaching \(program.rawValue)", code: code)
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

    private static func setCgroupFilter(_ map: OpaquePointer, path: String) throws {
        let cgroupFD = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroupFD >= 0 else { throw TracerError("cgroup \(path): \(String(cString: strerror(errno)))") }
        defer { close(cgroupFD) }
        var key: UInt32 = 0
        var value = UInt32(cgroupFD)
        let err = bpf_map_update_elem(bpf_map__fd(map), &key, &value, UInt64(BPF_ANY))
        if err != 0 { throw TracerError.libbpf("cgroup \(path) (is it a cgroup v2 directory?)", code: err) }
    }

    /// Only the plan's programs are loaded: the others' hooks may not exist
    /// in this kernel (libbpf resolves attach targets only for loaded programs).
    private static func selectPrograms(object: OpaquePointer, _ wanted: Set<BPFProgram>) throws {
        var found = Set<BPFProgram>()
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            let name = String(cString: bpf_program__name(current))
            let known = BPFProgram(rawValue: name)
            let load = known.map(wanted.contains) ?? false
            if load, let known { found.insert(known) }
            let err = bpf_program__set_autoload(current, load)
            if err != 0 { throw TracerError.libbpf("selecting program \(name)", code: err) }
            program = bpf_object__next_program(object, current)
        }
        if let missing = wanted.subtracting(found).first {
            throw TracerError("the BPF object has no program \"\(missing.rawValue)\"")
        }
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

/// The "slots" array of read path storage_array, mapped shared into this
/// process (BPF_F_MMAPABLE): read without a system call. Unmapped on deinit.
final class SlotMapping {
    let base: UnsafeMutableRawPointer
    let length: Int
    let count: Int

    init(map: OpaquePointer) throws {
        count = Int(bpf_map__max_entries(map))
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        length = (count * MemoryLayout<tcptop_slot>.stride + page - 1) / page * page
        let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(map), 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw TracerError("mapping the slots array: \(String(cString: strerror(errno)))")
        }
        base = mapped
    }

    deinit { munmap(base, length) }

    func slot(_ index: Int) -> UnsafeMutablePointer<tcptop_slot> {
        (base + index * MemoryLayout<tcptop_slot>.stride).assumingMemoryBound(to: tcptop_slot.self)
    }

    /// The word the kernel and this process hand the slot over by.
    func state(_ index: Int) -> UnsafeMutablePointer<UInt32> { field(index, \.state) }

    private func field<T>(_ index: Int, _ path: KeyPath<tcptop_slot, T>) -> UnsafeMutablePointer<T> {
        (base + index * MemoryLayout<tcptop_slot>.stride + MemoryLayout<tcptop_slot>.offset(of: path)!)
            .assumingMemoryBound(to: T.self)
    }
}
