import Foundation
import Glibc
import TestChildProcess

/// Runs Tests/traffic_peer.py processes: TCP peers with chosen process names
/// that move known numbers of bytes over loopback.
enum TrafficPeers {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let script = packageRoot.appending(path: "Tests/traffic_peer.py").path

    struct Exchange {
        var family: String  // "4" or "6"
        var clientPID: UInt32, clientPort: UInt16, clientName: String
        var serverPID: UInt32, serverPort: UInt16, serverName: String
        var clientSent: UInt64, serverSent: UInt64
        var loopback: String { family == "4" ? "127.0.0.1" : "::1" }
    }

    /// One client–server exchange, run to completion (both processes exited).
    /// Every step is bounded (see LinePeer); a failure ends both peers.
    /// Launchers and script: as LinePeer's.
    static func exchange(family: String, clientName: String, serverName: String,
                         clientSends: UInt64, serverSends: UInt64, peek: Bool = false, seed: Int = 1,
                         clientLauncher: [String] = [], serverLauncher: [String] = [],
                         script: String = TrafficPeers.script) throws -> Exchange {
        let server = try LinePeer(["serve", "--family", family, "--name", serverName,
                                   "--receive", "\(clientSends)", "--send", "\(serverSends)", "--seed", "\(seed)"]
                                  + (peek ? ["--peek"] : []), launcher: serverLauncher, script: script)
        let (serverPID, serverPort) = try server.readReady()
        let client = try LinePeer(["connect", "--family", family, "--name", clientName, "--port", "\(serverPort)",
                                   "--send", "\(clientSends)", "--receive", "\(serverSends)", "--seed", "\(seed + 1)"],
                                  launcher: clientLauncher, script: script)
        let (clientPID, clientPort) = try client.readReady()
        try client.waitDone()
        try server.waitDone()
        return Exchange(family: family, clientPID: clientPID, clientPort: clientPort, clientName: clientName,
                        serverPID: serverPID, serverPort: serverPort, serverName: serverName,
                        clientSent: clientSends, serverSent: serverSends)
    }
}

struct PeerError: Error, CustomStringConvertible { let description: String }

// MARK: - Child processes with bounded waits

/// Waiting for and ending the tests' child processes; no wait
/// here is unbounded.
enum Child {
    /// Waits at most `timeout` seconds for `process` to exit; true once it has.
    @discardableResult
    static func waitExit(_ process: ChildProcess, timeout: Double) -> Bool {
        process.waitUntilExit(timeout: timeout)
    }

    /// Ends `process` if it still runs: SIGTERM, then SIGKILL after `grace`
    /// seconds. Returns within grace + 5 s whatever the child does. (A child
    /// may well ignore SIGTERM: ChildProcess, like Foundation's Process,
    /// passes the starting thread's signal mask on, and the test threads,
    /// Dispatch workers, block SIGTERM, SIGINT, SIGHUP and more.)
    static func stop(_ process: ChildProcess, grace: Double = 2) {
        guard process.isRunning else { return }
        process.terminate()
        if waitExit(process, timeout: grace) { return }
        process.signal(SIGKILL)
        waitExit(process, timeout: 5)
    }

    /// "exited with status N" / "killed by signal N" / "still running".
    static func ending(_ process: ChildProcess) -> String {
        if process.isRunning { return "still running" }
        return process.terminationReason == .uncaughtSignal
            ? "killed by signal \(process.terminationStatus)" : "exited with status \(process.terminationStatus)"
    }
}

/// One end of a child's output pipe, read with poll(2) so that no read
/// blocks past its deadline.
final class PipeReader {
    let pipe = Pipe()
    private(set) var buffer: [UInt8] = []
    private(set) var atEnd = false
    private var fd: Int32 { pipe.fileHandleForReading.fileDescriptor }

    var text: String { String(decoding: buffer, as: UTF8.self) }

    /// Reads from every reader not at its end until `deadline`, until
    /// `done()` holds or every one reached its end. False on timeout.
    static func read(_ readers: [PipeReader], until deadline: Date, done: () -> Bool = { false }) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !done() {
            let open = readers.filter { !$0.atEnd }
            if open.isEmpty { return true }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(min(left * 1000 + 1, 1000)))
            if ready < 0 && errno != EINTR { return false }
            for (reader, polled) in zip(open, fds) where polled.revents != 0 {
                let count = Glibc.read(reader.fd, &chunk, chunk.count)
                if count > 0 {
                    reader.buffer += chunk[..<count]
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    reader.atEnd = true
                }
            }
        }
        return true
    }

    /// The next line, without its newline: nil at the end of the stream
    /// (an unterminated rest stays in `buffer`). Throws past the deadline.
    func readLine(until deadline: Date) -> ReadLine {
        var newline: Int? { buffer.firstIndex(of: UInt8(ascii: "\n")) }
        guard Self.read([self], until: deadline, done: { newline != nil }) else { return .timedOut }
        guard let end = newline else { return .end }
        let line = String(decoding: buffer[..<end], as: UTF8.self)
        buffer.removeSubrange(...end)
        return .line(line)
    }

    enum ReadLine: Equatable { case line(String), end, timedOut }

    /// Whatever is left up to the end of the stream, read for at most `timeout` seconds.
    func rest(timeout: Double = 2) -> String {
        _ = Self.read([self], until: Date().addingTimeInterval(timeout))
        return text
    }
}

// MARK: - Traffic peers

/// A traffic_peer.py child whose stdout is read line by line, every read
/// bounded by a deadline: past it, or when the peer ends early, the peer is
/// ended and a PeerError says what was awaited, with the peer's stderr.
/// With `hold`, the peer keeps its connection open after the transfer
/// until `release()`. Deinit ends a peer still running (SIGTERM, SIGKILL).
final class LinePeer {
    /// Seconds one line may take (traffic_peer.py's own bound is 60 s per
    /// wait; this one is shorter so that the test, not the peer, reports).
    static let lineTimeout: Double = 30

    let process = ChildProcess()
    private let output = PipeReader()
    private let errors = PipeReader()
    /// The test's end of a socket pair that is the peer's stdin (for --hold):
    /// a send to a peer that is gone fails with EPIPE instead of raising SIGPIPE.
    private var control: Int32 = -1
    private let name: String

    /// With `netns`, the peer runs in that network namespace (`ip netns exec`
    /// execs it: the pid is the peer's own). `launcher`: a command that
    /// execs the rest (python3 and its arguments), e.g. one that joins a
    /// cgroup or changes user first; `script`: a copy of traffic_peer.py
    /// (one another user can read).
    init(_ arguments: [String], hold: Bool = false, netns: String? = nil, launcher: [String] = [],
         script: String = TrafficPeers.script) throws {
        let nameIndex = arguments.firstIndex(of: "--name").map { $0 + 1 }
        name = "traffic peer \(arguments.first ?? "") \(nameIndex.flatMap { arguments.indices.contains($0) ? arguments[$0] : nil } ?? "")"
        let command = launcher + ["/usr/bin/python3", script] + arguments + (hold ? ["--hold"] : [])
        if let netns {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", netns] + command
        } else {
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
        }
        process.standardOutput = output.pipe
        process.standardError = errors.pipe
        var peerInput: FileHandle?
        if hold {
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                throw PeerError(description: "socketpair: \(String(cString: strerror(errno)))")
            }
            control = pair[0]
            peerInput = FileHandle(fileDescriptor: pair[1], closeOnDealloc: true)
        }
        process.standardInput = peerInput ?? FileHandle.nullDevice
        try process.run()
        try? peerInput?.close()
    }

    deinit {
        Child.stop(process)
        if control >= 0 { close(control) }
    }

    /// Lets a --hold peer close its connection and finish.
    func release() {
        _ = send(control, "\n", 1, Int32(MSG_NOSIGNAL))
    }

    /// Reads the next line and checks it is `expected`; after "DONE", waits for a clean exit.
    func waitFor(_ expected: String, timeout: Double = LinePeer.lineTimeout) throws {
        if expected == "DONE" { return try waitDone(timeout: timeout) }
        let line = try readLine(awaiting: expected, timeout: timeout)
        guard line == expected else { throw failure("said \(line.debugDescription) while \(expected) was expected") }
    }

    func readLine(timeout: Double = LinePeer.lineTimeout) throws -> String {
        try readLine(awaiting: "its next line", timeout: timeout)
    }

    func readReady(timeout: Double = LinePeer.lineTimeout) throws -> (UInt32, UInt16) {
        let line = try readLine(awaiting: "READY", timeout: timeout)
        var fields: [String: String] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard line.hasPrefix("READY"), let pid = fields["pid"].flatMap({ UInt32($0) }),
            let port = fields["port"].flatMap({ UInt16($0) })
        else { throw failure("said \(line.debugDescription) while READY was expected") }
        return (pid, port)
    }

    /// Reads "DONE" and waits for the peer to exit 0.
    func waitDone(timeout: Double = LinePeer.lineTimeout) throws {
        let line = try readLine(awaiting: "DONE", timeout: timeout)
        let exited = Child.waitExit(process, timeout: 10)
        guard line == "DONE", exited, process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw failure("ended with \(line.debugDescription), \(exited ? Child.ending(process) : "did not exit within 10 s after it")")
        }
    }

    private func readLine(awaiting what: String, timeout: Double) throws -> String {
        switch output.readLine(until: Date().addingTimeInterval(timeout)) {
        case .line(let line): return line
        case .end:
            Child.waitExit(process, timeout: 5)
            throw failure("\(Child.ending(process)) while waiting for \(what)")
        case .timedOut:
            throw failure("printed no line within \(timeout) s while waiting for \(what)")
        }
    }

    /// Ends the peer and describes what went wrong, with its stderr.
    private func failure(_ what: String) -> PeerError {
        Child.stop(process)
        let stderr = errors.rest().trimmingCharacters(in: .whitespacesAndNewlines)
        return PeerError(description: "\(name) (pid \(process.processIdentifier)) \(what)"
                             + (stderr.isEmpty ? "" : "; its stderr: \(stderr)"))
    }
}

let runningAsRoot = getuid() == 0
