import CTCPTop
import Foundation
import Glibc

/// Once the programs are attached, the maps open and the listeners bound,
/// the daemon keeps only the capabilities reading the maps needs on the
/// running kernel, found by trying: with none effective, then with CAP_BPF
/// alone, then CAP_SYS_ADMIN alone (what the kernel takes for CAP_BPF), a
/// read is tried (`check`); the first set that reads is kept, in the
/// effective and permitted sets; every other capability leaves the bounding
/// set too (when CAP_SETPCAP allows it), the inheritable and ambient sets
/// are emptied. Capabilities are per thread in Linux: call this before any
/// other thread starts, so that every thread the daemon starts inherits it.
public enum LeastPrivilege {
    public struct Outcome: Sendable {
        /// What is left, e.g. [] or ["CAP_BPF"].
        public var kept: [String]
        /// How many permitted capabilities were given up.
        public var dropped: Int
        /// False when the bounding set could not be narrowed (no CAP_SETPCAP:
        /// under the unit, systemd's CapabilityBoundingSet= narrowed it).
        public var boundingNarrowed: Bool
        /// Threads of the process when it was done (1: every later thread inherits it).
        public var threads: Int
        /// Why reading needed what was kept (the refusal without it), if anything.
        public var refusedWithout: String?
    }

    struct Sets {
        var effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0
    }

    static let setpcap = 8, sysAdmin = 21, bpf = 39

    static func bit(_ cap: Int) -> UInt64 { 1 << UInt64(cap) }

    static func current() throws -> Sets {
        var sets = Sets()
        guard tcptop_caps_get(&sets.effective, &sets.permitted, &sets.inheritable) == 0 else { throw failure("capget") }
        return sets
    }

    static func set(effective: UInt64, permitted: UInt64) throws {
        guard tcptop_caps_set(effective, permitted, 0) == 0 else { throw failure("capset") }
    }

    static func failure(_ call: String) -> Error {
        CapabilityError(description: "\(call): \(String(cString: strerror(errno)))")
    }

    public struct CapabilityError: Error, CustomStringConvertible { public let description: String }

    /// The drop for a started tracer: `check` is its trial read.
    public static func dropAfterAttach(_ tracer: TCPTracer) throws -> Outcome {
        try dropAfterAttach(check: tracer.checkReadAccess)
    }

    public static func dropAfterAttach(check: () throws -> Void) throws -> Outcome {
        let start = try current()
        var refusal: String?
        var keep: UInt64?
        for candidate in [0, bit(bpf), bit(sysAdmin)] where candidate & start.permitted == candidate {
            try set(effective: candidate, permitted: start.permitted)
            do {
                try check()
                keep = candidate
                break
            } catch {
                if refusal == nil { refusal = "\(error)" }
            }
        }
        guard let keep else {
            // Reading fails even with CAP_BPF: something else is wrong; keep what we had.
            try set(effective: start.effective, permitted: start.permitted)
            throw CapabilityError(description: "reading the maps failed with every capability set tried: \(refusal ?? "?")")
        }
        var narrowed = false
        if start.permitted & bit(setpcap) != 0 {
            try set(effective: keep | bit(setpcap), permitted: start.permitted)
            narrowed = true
            for cap in 0...Int(tcptop_cap_last()) where keep & bit(cap) == 0 && tcptop_capbset_read(Int32(cap)) == 1 {
                if tcptop_capbset_drop(Int32(cap)) != 0 { narrowed = false }
            }
        }
        _ = tcptop_ambient_clear_all()
        try set(effective: keep, permitted: keep)
        let now = try current()
        guard now.effective == keep, now.permitted == keep, now.inheritable == 0 else {
            throw CapabilityError(description: "capabilities after the drop are not what was set")
        }
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
        return Outcome(kept: names(keep), dropped: (start.permitted & ~keep).nonzeroBitCount, boundingNarrowed: narrowed,
                       threads: threads, refusedWithout: keep == 0 ? nil : refusal)
    }

    static let capabilityNames = [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
        "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
        "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
        "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
        "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
        "checkpoint_restore",
    ]

    public static func names(_ mask: UInt64) -> [String] {
        (0..<64).filter { mask & bit($0) != 0 }.map { $0 < capabilityNames.count ? "CAP_" + capabilityNames[$0].uppercased() : "cap_\($0)" }
    }
}
