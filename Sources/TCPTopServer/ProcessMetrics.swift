import Foundation
import TCPTopCore

/// The standard process_* metrics, read from /proc/self like the Prometheus
/// client libraries do.
struct ProcessMetrics {
    var cpuSeconds: Double
    var residentBytes: UInt64
    var virtualBytes: UInt64
    var openFDs: Int
    var maxFDs: Int?
    var startTimeSeconds: Double

    static func read() -> ProcessMetrics? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let bootTime = bootTimeSeconds()
        else { return nil }
        return parse(stat: stat, bootTime: bootTime, ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))),
                     pageSize: UInt64(sysconf(Int32(_SC_PAGESIZE))), openFDs: countOpenFDs(), maxFDs: maxOpenFDs())
    }

    /// Pure: parses /proc/self/stat. The command name (field 2) may hold
    /// spaces and parentheses, so fields are counted after its last ')'.
    static func parse(stat: String, bootTime: Double, ticksPerSecond: Double, pageSize: UInt64,
                      openFDs: Int, maxFDs: Int?) -> ProcessMetrics? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After ')': field 3 (state) is index 0, so field N is index N-3.
        func field(_ n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
        guard let utime = field(14), let stime = field(15), let start = field(22),
            let vsize = field(23), let rss = field(24)
        else { return nil }
        return ProcessMetrics(
            cpuSeconds: (utime + stime) / ticksPerSecond, residentBytes: UInt64(rss) * pageSize,
            virtualBytes: UInt64(vsize), openFDs: openFDs, maxFDs: maxFDs,
            startTimeSeconds: bootTime + start / ticksPerSecond)
    }

    func write(into writer: inout ExpositionWriter) {
        writer.family(name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", type: .counter)
        writer.sample(name: "process_cpu_seconds_total", labels: [], value: cpuSeconds)
        writer.family(name: "process_resident_memory_bytes", help: "Resident memory size in bytes.", type: .gauge)
        writer.sample(name: "process_resident_memory_bytes", labels: [], value: residentBytes)
        writer.family(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.", type: .gauge)
        writer.sample(name: "process_virtual_memory_bytes", labels: [], value: virtualBytes)
        writer.family(name: "process_open_fds", help: "Number of open file descriptors.", type: .gauge)
        writer.sample(name: "process_open_fds", labels: [], value: UInt64(openFDs))
        if let maxFDs {
            writer.family(name: "process_max_fds", help: "Maximum number of open file descriptors.", type: .gauge)
            writer.sample(name: "process_max_fds", labels: [], value: UInt64(maxFDs))
        }
        writer.family(name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.", type: .gauge)
        writer.sample(name: "process_start_time_seconds", labels: [], value: startTimeSeconds)
    }

    private static func bootTimeSeconds() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst("btime ".count))
        }
        return nil
    }

    private static func countOpenFDs() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }

    private static func maxOpenFDs() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return Int(limit.rlim_cur)
    }
}
