import Foundation
import Glibc
import TestChildProcess
import Testing

/// ChildProcess, the tests' posix_spawn child: status, signals, stdio,
/// environment, and that no descriptor of this process leaks into a child
/// however many it holds.
struct ChildProcessTests {
    @Test func exitStatusIsReported() throws {
        let child = try start("/bin/sh", ["-c", "exit 7"])
        #expect(child.processIdentifier > 0)
        #expect(child.waitUntilExit(timeout: 10))
        #expect(!child.isRunning)
        #expect(child.terminationReason == .exit)
        #expect(child.terminationStatus == 7)
    }

    @Test func deathBySignalIsReportedAsSuch() throws {
        let child = try start("/bin/sleep", ["30"])
        #expect(child.isRunning)
        #expect(child.terminationStatus == -1, "no status while it runs")
        child.signal(SIGKILL)
        #expect(child.waitUntilExit(timeout: 10))
        #expect(child.terminationReason == .uncaughtSignal)
        #expect(child.terminationStatus == SIGKILL)
        child.terminate()  // reaped: no signal is sent (the pid may be another's now), nothing fails
    }

    /// terminate() sends SIGTERM, interrupt() SIGINT.
    @Test(arguments: [SIGTERM, SIGINT])
    func terminateAndInterruptSendTheirSignal(signal: Int32) throws {
        // The child unblocks every signal (it starts with this thread's mask, which may block
        // SIGTERM) and takes SIGINT's default action (not Python's KeyboardInterrupt).
        let output = Pipe()
        let script = "import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            + "signal.pthread_sigmask(signal.SIG_SETMASK, []); print('ready', flush=True); signal.pause()"
        let child = try start("/usr/bin/python3", ["-c", script], stdout: output)
        #expect(try readAll(output, until: "\n") == "ready\n")
        if signal == SIGTERM { child.terminate() } else { child.interrupt() }
        #expect(child.waitUntilExit(timeout: 10))
        #expect(child.terminationReason == .uncaughtSignal)
        #expect(child.terminationStatus == signal)
    }

    @Test func pipesCarryBytesBothWays() throws {
        let input = Pipe(), output = Pipe(), errors = Pipe()
        let child = try start("/bin/sh", ["-c", "cat; echo to-stderr >&2"], stdin: input, stdout: output, stderr: errors)
        let sent = String(repeating: "0123456789abcde\n", count: 3_750)  // 60,000 bytes, below a pipe's 64 KiB: no deadlock
        try input.fileHandleForWriting.write(contentsOf: Data(sent.utf8))
        try input.fileHandleForWriting.close()
        // cat sees the end of its input only if no copy of the write end leaked into the child.
        #expect(try readAll(output) == sent)
        #expect(try readAll(errors) == "to-stderr\n")
        #expect(child.waitUntilExit(timeout: 10) && child.terminationStatus == 0)
    }

    @Test func onlyStdioIsInherited() throws {
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(ends[0]); close(ends[1]); close(socketFD) }
        for fd in ends + [socketFD] { #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC == 0, "fd \(fd) would be inherited by exec") }

        let child = try start("/bin/sleep", ["30"])
        defer { child.signal(SIGKILL); child.waitUntilExit() }
        // posix_spawn returns once the child has exec'd, but its dynamic loader may
        // still hold a library open for a moment (fd 3): what stays is what was inherited.
        let stdio = ["0": "/dev/null", "1": "/dev/null", "2": "/dev/null"]
        var seen = try descriptors(of: child)
        let deadline = Date().addingTimeInterval(2)
        while seen != stdio && Date() < deadline {
            usleep(10_000)
            seen = try descriptors(of: child)
        }
        #expect(seen == stdio)
        #expect(getpgid(child.processIdentifier) == child.processIdentifier, "a process group of its own, as Process makes")
    }

    @Test func environmentIsPassedOrInherited() throws {
        let given = Pipe()
        let child = try start("/usr/bin/env", [], stdout: given, environment: ["TT_CHILD": "one two", "EMPTY": ""])
        #expect(Set(try readAll(given).split(separator: "\n")) == ["TT_CHILD=one two", "EMPTY="])
        #expect(child.waitUntilExit(timeout: 10) && child.terminationStatus == 0)

        let inherited = Pipe()
        let other = try start("/usr/bin/env", [], stdout: inherited)
        let lines = try readAll(inherited).split(separator: "\n").map(String.init)
        #expect(lines.contains("PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "")"))
        #expect(other.waitUntilExit(timeout: 10) && other.terminationStatus == 0)
    }

    @Test func aMissingExecutableThrows() throws {
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: "/nonexistent/tool")
        #expect(throws: ChildProcessError.self) { try child.run() }
        #expect(child.processIdentifier == 0 && !child.isRunning)
    }

    @Test func aChildDroppedWhileRunningIsReaped() throws {
        var child: ChildProcess? = try start("/bin/sleep", ["0.2"])
        let pid = child!.processIdentifier
        child = nil
        // Gone from /proc once reaped (a zombie stays there); the pid is not reused within seconds.
        let deadline = Date().addingTimeInterval(10)
        while access("/proc/\(pid)", F_OK) == 0 && Date() < deadline { usleep(10_000) }
        #expect(access("/proc/\(pid)", F_OK) != 0, "pid \(pid) was not reaped")
    }

    /// The CI crash: Process.run() scanned /proc/self/fd while the test process
    /// held thousands of descriptors. 200 children, started from 4 threads at
    /// once, while 3000 descriptors (no CLOEXEC) are open; each exits 0 and
    /// one sees only its stdio.
    @Test func startsChildrenWhileThousandsOfDescriptorsAreOpen() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        try #require(limit.rlim_max >= 4_000, "RLIMIT_NOFILE hard limit \(limit.rlim_max) is below 4000")
        if limit.rlim_cur < 4_000 {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<3_000 {
            let fd = open("/dev/null", O_RDONLY)
            try #require(fd >= 0, "open: \(String(cString: strerror(errno)))")
            held.append(fd)
        }

        let watched = try start("/bin/sleep", ["30"])
        defer { watched.signal(SIGKILL); watched.waitUntilExit() }
        #expect(try descriptors(of: watched).count == 3)

        let started = ContinuousClock.now
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<50 {
                do {
                    let child = try start("/bin/true", [])
                    if !child.waitUntilExit(timeout: 10) || child.terminationStatus != 0 { failures.add("/bin/true: \(child.terminationStatus)") }
                } catch {
                    failures.add("\(error)")
                }
            }
        }
        let elapsed = started.duration(to: .now)
        print("200 children with 3000 descriptors open: \(elapsed)")
        #expect(failures.all.isEmpty, "\(failures.all.prefix(3))")
        #expect(elapsed < .seconds(30))
    }

    // MARK: - Helpers

    private func start(_ path: String, _ arguments: [String], stdin: (any ChildStream)? = nil, stdout: (any ChildStream)? = nil,
                       stderr: (any ChildStream)? = nil, environment: [String: String]? = nil) throws -> ChildProcess {
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: path)
        child.arguments = arguments
        child.environment = environment
        child.standardInput = stdin
        child.standardOutput = stdout
        child.standardError = stderr
        try child.run()
        return child
    }

    /// The child's open descriptors and what each refers to.
    private func descriptors(of child: ChildProcess) throws -> [String: String] {
        let directory = "/proc/\(child.processIdentifier)/fd"
        var result: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            result[name] = (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + name)) ?? "?"
        }
        return result
    }

    /// Reads the pipe until its end (or `stop` was read), at most 10 s.
    private func readAll(_ pipe: Pipe, until stop: String? = nil) throws -> String {
        let fd = pipe.fileHandleForReading.fileDescriptor
        var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(10)
        while stop.map({ !String(decoding: bytes, as: UTF8.self).contains($0) }) ?? true {
            var polled = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(deadline.timeIntervalSinceNow * 1000)
            guard left > 0 else { throw ChildProcessTestError.noEndWithin10Seconds(bytesRead: bytes.count) }
            if poll(&polled, 1, left) <= 0 { continue }
            let count = read(fd, &chunk, chunk.count)
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private enum ChildProcessTestError: Error { case noEndWithin10Seconds(bytesRead: Int) }

    private final class Failures: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func add(_ failure: String) { lock.withLock { list.append(failure) } }
        var all: [String] { lock.withLock { list } }
    }
}
