import Foundation
import Glibc

/// Small helpers around the OS: clocks, /proc, limits, threads, cleanup.

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Monotonic seconds.
func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    usleep(UInt32(seconds * 1e6))
}

// MARK: /proc

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in bytes.
func statusBytes(pid: pid_t, field: String) -> UInt64? {
    let path = pid == getpid() ? "/proc/self/status" : "/proc/\(pid)/status"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let number = line.dropFirst(field.count + 1).split(whereSeparator: \.isWhitespace).first.flatMap { UInt64($0) }
        return number.map { $0 * 1024 }
    }
    return nil
}

/// utime + stime of a process (all its threads), in seconds.
func cpuSeconds(pid: pid_t) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")  // comm may hold spaces and ')'
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After ')': field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func cpuModel() -> String {
    let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("model name") }
    let model = line?.split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    return "\(model), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs"
}

/// Real connections need two descriptors each: raise the soft limit (and the hard one as root).
func raiseOpenFileLimit(to wanted: rlim_t) {
    var limit = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    guard limit.rlim_cur < wanted else { return }
    limit.rlim_cur = wanted
    limit.rlim_max = max(limit.rlim_max, wanted)
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
}

/// The kernel's name for the calling thread (15 bytes at most). The BPF
/// program labels bytes with the comm of the thread that sends them.
func setThreadName(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    _ = write(fd, name, min(name.utf8.count, 15))
    close(fd)
}

// MARK: Threads

/// A thread whose result can be awaited.
final class Worker<Result>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result?

    init(name: String? = nil, _ body: @escaping @Sendable () -> Result) {
        Thread.detachNewThread { [self] in
            if let name { setThreadName(name) }
            result = body()
            done.signal()
        }
    }

    func join() -> Result {
        done.wait()
        return result!
    }
}

// MARK: Cleanup

/// Children and temporary files the bench must not leave behind, whether it
/// ends normally, with an error or on SIGINT/SIGTERM.
final class Cleanup: @unchecked Sendable {
    static let shared = Cleanup()

    private let lock = NSLock()
    private var children: [pid_t] = []
    /// Run after the children are killed (network namespaces to delete), by key.
    private var finalActions: [(key: String, action: @Sendable () -> Void)] = []
    private var signalSources: [DispatchSourceSignal] = []
    /// One directory for every temporary file (notify sockets, configs, logs).
    let directory: String

    private init() {
        var template = Array((NSTemporaryDirectory() + "tcptop-bench-XXXXXX").utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    func path(_ name: String) -> String { directory + "/" + name }

    func track(_ pid: pid_t) { lock.withLock { children.append(pid) } }
    func untrack(_ pid: pid_t) { lock.withLock { children.removeAll { $0 == pid } } }
    func atEnd(_ key: String, _ action: @escaping @Sendable () -> Void) { lock.withLock { finalActions.append((key, action)) } }
    /// Runs the action of `key` now (once) and forgets it.
    func runNow(_ key: String) {
        let actions = lock.withLock {
            defer { finalActions.removeAll { $0.key == key } }
            return finalActions.filter { $0.key == key }
        }
        for entry in actions { entry.action() }
    }

    /// Kills what is still running, runs the final actions (namespaces deleted), removes the temporary directory.
    func run() {
        let pids = lock.withLock { children }
        for pid in pids { kill(pid, SIGKILL) }
        let actions = lock.withLock {
            defer { finalActions = [] }
            return finalActions
        }
        for entry in actions { entry.action() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// SIGINT and SIGTERM clean up and exit (a dispatch source, so the
    /// cleanup may allocate and remove files).
    func installSignalHandlers() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                FileHandle.standardError.write(Data("tcptop-bench: interrupted, cleaning up\n".utf8))
                run()
                exit(130)
            }
            source.resume()
            lock.withLock { signalSources.append(source) }
        }
    }
}
