import CTCPTop
import Glibc

/// Checks made before loading, so that a missing privilege or kernel feature
/// is reported as what it is rather than as a verifier or libbpf error.
enum Preflight {
    // Capability numbers from linux/capability.h.
    static let capSysAdmin = 21
    static let capPerfmon = 38
    static let capBPF = 39

    /// Loading needs CAP_BPF (map creation, loading) and CAP_PERFMON (tracing
    /// programs that read kernel memory); CAP_SYS_ADMIN implies both.
    static func checkCapabilities(statusText: String) throws {
        guard let effective = effectiveCapabilities(statusText: statusText) else { return }
        func has(_ bit: Int) -> Bool { effective & (1 << UInt64(bit)) != 0 }
        if has(capSysAdmin) { return }
        let missing = [(capBPF, "CAP_BPF"), (capPerfmon, "CAP_PERFMON")].filter { !has($0.0) }.map(\.1)
        if !missing.isEmpty {
            throw TracerError(
                "missing capability \(missing.joined(separator: " and ")): run as root or grant CAP_BPF and CAP_PERFMON")
        }
    }

    static func effectiveCapabilities(statusText: String) -> UInt64? {
        for line in statusText.split(separator: "\n") where line.hasPrefix("CapEff:") {
            return UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: " \t"), radix: 16)
        }
        return nil
    }

    /// bpf() itself can be refused whatever the capabilities (a seccomp
    /// filter such as systemd's SystemCallFilter=, a container runtime): a
    /// one-entry map says so before any program is blamed.
    static func checkBPFSyscall() throws {
        let fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, nil, 4, 4, 1, nil)
        guard fd >= 0 else {
            throw TracerError(
                "the kernel refuses bpf(): creating a one-entry BPF map failed: \(libbpfErrorText(fd)) (a seccomp filter, such as systemd's SystemCallFilter= or a container runtime's, or a security module forbids it)")
        }
        close(fd)
    }

    // What the kernel offers (BTF, tracepoints, functions) is read in
    // KernelHooks.probe(); what it allows is found out by loading (TCPTracer.start).
}

/// The running kernel's release (uname -r), for logs and errors.
public func kernelRelease() -> String {
    var names = utsname()
    uname(&names)
    return withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var text = self
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return text
    }
}
