import CTCPTop
import Glibc

/// The kernel's own accounting of BPF run time, for the benchmark.
public struct ProgramStats: Sendable, Equatable {
    public var name: String
    public var runTimeNanoseconds: UInt64
    public var runCount: UInt64
    /// Runs the kernel skipped: the program was already running on that CPU
    /// (a softirq event while it ran for a process), so the event was not
    /// seen (bpf_prog_info.recursion_misses, Linux >= 5.12; 0 before).
    public var missedRuns: UInt64
}

extension TCPTracer {
    /// Run time and run count of each loaded program. They only grow while
    /// run-time statistics are enabled (`RunTimeStatistics` or the sysctl
    /// kernel.bpf_stats_enabled); missed runs always do.
    public func programStats() -> [ProgramStats] {
        var stats: [ProgramStats] = []
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            if bpf_obj_get_info_by_fd(bpf_program__fd(current), &info, &length) == 0 {
                stats.append(ProgramStats(name: String(cString: bpf_program__name(current)),
                                          runTimeNanoseconds: info.run_time_ns, runCount: info.run_cnt,
                                          missedRuns: info.recursion_misses))
            }
            program = bpf_object__next_program(object, current)
        }
        return stats
    }
}

/// Turns on the kernel's BPF run-time accounting while this value lives
/// (BPF_ENABLE_STATS: no sysctl to restore afterwards, even after a crash).
public final class RunTimeStatistics {
    private let fd: Int32

    public init() throws {
        let fd = bpf_enable_stats(BPF_STATS_RUN_TIME)
        guard fd >= 0 else { throw TracerError.libbpf("enabling BPF run-time statistics", code: fd) }
        self.fd = fd
    }

    deinit { close(fd) }
}
