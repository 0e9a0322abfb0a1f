import CTCPTop
import Glibc

/// BPF programs loaded on the machine, by name. Other tcptop tracers
/// (tests, other sessions) would make a "tracer off" round not really off.
enum LoadedPrograms {
    static func count(namedIn names: Set<String>) -> Int {
        var count = 0
        var id: UInt32 = 0
        while bpf_prog_get_next_id(id, &id) == 0 {
            let fd = bpf_prog_get_fd_by_id(id)
            guard fd >= 0 else { continue }  // unloaded meanwhile
            defer { close(fd) }
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { continue }
            let programName = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if names.contains(programName) { count += 1 }
        }
        return count
    }
}
