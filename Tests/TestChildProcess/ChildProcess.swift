import CTCPTop
import Foundation
import Glibc

/// What a child's stdin, stdout or stderr can be: a Pipe (the child gets
/// the end it needs; this process's copy of that end is closed once the
/// child runs) or a FileHandle (its descriptor; FileHandle.nullDevice is
/// /dev/null).
public protocol ChildStream {}
extension Pipe: ChildStream {}
extension FileHandle: ChildStream {}

/// A child process for the tests, with the properties of Foundation's
/// Process that the tests use, started with posix_spawn instead.
///
/// Why not Process: on Linux, Process.run() reads /proc/self/fd copying
/// whole `struct dirent`s, which can read past glibc's readdir buffer into
/// an unmapped page (swift-corelibs-foundation PR #5472), and it adds one
/// close action per descriptor up to the highest open one. The test
/// process holds thousands of descriptors at times (HTTP servers under
/// connection floods) while other suites start children: it crashed CI.
/// Here the child closes every descriptor from 3 up with one action
/// (closefrom), whatever this process holds.
///
/// Like Process: the child gets its own process group, this thread's
/// signal mask (a test thread's blocks SIGTERM, SIGHUP, SIGINT) and the
/// dispositions exec keeps (ignored signals stay ignored); argv[0] is the
/// executable's path; nil stdio is /dev/null; no environment means this
/// process's.
///
/// Reaping: waitpid(pid, WNOHANG) under a lock, from isRunning and the
/// waits, so the child is reaped exactly once and never signalled once
/// reaped (its pid may be another process's by then). A child still
/// unreaped when this object goes away is reaped by a thread of its own.
public final class ChildProcess: @unchecked Sendable {
    public enum TerminationReason: Sendable { case exit, uncaughtSignal }

    public var executableURL: URL?
    public var arguments: [String] = []
    public var environment: [String: String]?
    public var standardInput: (any ChildStream)? = FileHandle.standardInput
    public var standardOutput: (any ChildStream)? = FileHandle.standardOutput
    public var standardError: (any ChildStream)? = FileHandle.standardError

    private let lock = NSLock()
    private var pid: pid_t = 0
    private var ending: (status: Int32, reason: TerminationReason)?

    public init() {}

    deinit {
        guard pid > 0, !reapIfExited() else { return }
        let pid = self.pid
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        }
    }

    /// 0 until run().
    public var processIdentifier: Int32 { lock.withLock { pid } }

    /// True from run() until the child exited (and was reaped).
    public var isRunning: Bool { lock.withLock { pid > 0 && !reapIfExited() } }

    /// The exit status, or the signal that ended the child. While it runs
    /// (or before run()): -1. Unlike Process this does not trap: a test
    /// reading it too early fails an expectation, not the whole test process.
    public var terminationStatus: Int32 { lock.withLock { reapIfExited() ? ending!.status : -1 } }

    /// .exit while the child runs; check isRunning first.
    public var terminationReason: TerminationReason { lock.withLock { reapIfExited() ? ending!.reason : .exit } }

    public func terminate() { signal(SIGTERM) }
    public func interrupt() { signal(SIGINT) }

    /// Sends `number` to the child unless it was reaped (then its pid may be
    /// another process's).
    public func signal(_ number: Int32) {
        lock.withLock {
            if pid > 0, ending == nil { _ = kill(pid, number) }
        }
    }

    /// Blocks until the child exited; returns at once before run().
    /// Unbounded: use it only where the child ends by itself or was killed.
    public func waitUntilExit() {
        let child = processIdentifier
        guard child > 0 else { return }
        // WNOWAIT: wait without reaping (that stays under the lock); ECHILD
        // means another thread reaped it already.
        var info = siginfo_t()
        while waitid(P_PID, id_t(child), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
        lock.withLock { _ = reapIfExited() }
    }

    /// Waits at most `timeout` seconds for the exit; true once it happened.
    @discardableResult
    public func waitUntilExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var pause: useconds_t = 1_000
        while isRunning {
            if Date() >= deadline { return false }
            usleep(pause)
            pause = min(pause * 2, 10_000)
        }
        return true
    }

    /// Starts the child. Throws when it cannot be started (e.g. the
    /// executable is missing: posix_spawn reports exec's error).
    public func run() throws {
        guard let path = executableURL?.path else { throw ChildProcessError("no executableURL") }
        guard processIdentifier == 0 else { throw ChildProcessError("\(path) was started already") }
        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        try check(posix_spawn_file_actions_init(&actions), "posix_spawn_file_actions_init")
        defer { posix_spawn_file_actions_destroy(&actions) }
        try check(posix_spawnattr_init(&attributes), "posix_spawnattr_init")
        defer { posix_spawnattr_destroy(&attributes) }
        try check(posix_spawnattr_setpgroup(&attributes, 0), "posix_spawnattr_setpgroup")
        try check(posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP)), "posix_spawnattr_setflags")

        // Copies of sources below 3, so that dup2 onto 0, 1, 2 in turn
        // cannot overwrite a later source; closed once the child runs.
        var copies: [Int32] = []
        defer { for fd in copies { close(fd) } }
        var childEnds: [FileHandle] = []
        for (target, stream) in [(Int32(0), standardInput), (1, standardOutput), (2, standardError)] {
            var fd: Int32 = -1
            switch stream {
            case let pipe as Pipe:
                let end = target == 0 ? pipe.fileHandleForReading : pipe.fileHandleForWriting
                fd = end.fileDescriptor
                childEnds.append(end)
            case let handle as FileHandle:
                fd = handle.fileDescriptor
            default:
                break
            }
            if fd < 0 {
                try check(posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_RDWR, 0), "addopen /dev/null")
            } else if fd == target {
                continue  // inherited as it is
            } else {
                if fd < 3 {
                    let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
                    guard copy >= 0 else { throw ChildProcessError("dup of fd \(fd): \(String(cString: strerror(errno)))") }
                    copies.append(copy)
                    fd = copy
                }
                try check(posix_spawn_file_actions_adddup2(&actions, fd, target), "adddup2")
            }
        }
        try check(tcptop_spawn_file_actions_addclosefrom(&actions, 3), "addclosefrom")

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var child: pid_t = 0
        let result = envp.map { posix_spawn(&child, path, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&child, path, &actions, &attributes, argv, environ)
        guard result == 0 else { throw ChildProcessError("\(path): \(String(cString: strerror(result)))") }
        lock.withLock { pid = child }
        var closed = Set<ObjectIdentifier>()  // one Pipe may be both stdout and stderr
        for end in childEnds where closed.insert(ObjectIdentifier(end)).inserted { try? end.close() }
    }

    /// With the lock held: true once the child exited, reaping it if that
    /// has not happened yet.
    private func reapIfExited() -> Bool {
        if ending != nil { return true }
        guard pid > 0 else { return false }
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == 0 { return false }
            if result == pid {
                // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
                let signal = status & 0x7f
                ending = signal == 0 ? ((status >> 8) & 0xff, .exit) : (signal, .uncaughtSignal)
                return true
            }
            if errno == EINTR { continue }
            // ECHILD: reaped by someone else (no test code does this). Gone, status unknown.
            ending = (-1, .exit)
            return true
        }
    }

    private func check(_ result: Int32, _ what: String) throws {
        guard result == 0 else { throw ChildProcessError("\(what): \(String(cString: strerror(result)))") }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
