import Foundation
import Glibc

/// A wire with delay and loss for figure 8: two network namespaces
/// (Tests/tools/delayline-netns.sh) joined by the user-space delay line
/// (Tests/tools/delayline.c, built here with clang), and a listener on the
/// server's side. A (10.77.0.1) is the client, B (10.77.0.2) the server.
/// `stop()` (or Cleanup, on any other path) ends it and deletes both namespaces.
final class DelayLineRun {
    static let serverAddress = UInt32(0x0a4d_0002)  // 10.77.0.2
    let name = "tt-bench-\(getpid())"
    var clientNamespace: String { name + "-a" }
    var serverNamespace: String { name + "-b" }
    private let process = Process()
    private let output = Pipe()
    private var listener: Int32 = -1
    private(set) var port: UInt16 = 0
    private var stopped = false

    /// `arguments`: delayline's options past the namespaces; it exits by itself after `seconds`.
    init(_ arguments: [String], seconds: Int) throws {
        guard FileManager.default.fileExists(atPath: "/dev/net/tun") else { throw BenchError("no /dev/net/tun: the delay line needs TUN") }
        let root = try Self.repositoryRoot()
        let tool = Cleanup.shared.path("delayline")
        try runCommand("/usr/bin/env", ["clang", "-O2", "-Wall", "-o", tool, root + "/Tests/tools/delayline.c"], timeout: 90)
        let script = root + "/Tests/tools/delayline-netns.sh", name = name
        Cleanup.shared.atEnd(name) { try? runCommand(script, ["down", name], timeout: 30) }
        do {
            try runCommand(script, ["up", name], timeout: 30)
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = ["--ns-a", name + "-a", "--ns-b", name + "-b", "--seconds", "\(seconds)"] + arguments
            process.standardOutput = output
            process.standardError = FileHandle.standardError
            try process.run()
            Cleanup.shared.track(process.processIdentifier)
            let ready = readLine(output.fileHandleForReading.fileDescriptor, timeout: 10)
            guard ready.hasPrefix("READY") else { throw BenchError("delayline said \(ready.debugDescription) instead of READY") }
            (listener, port) = try Self.listen(in: name + "-b")
        } catch {
            end()
            throw error
        }
    }

    deinit { _ = stop() }

    /// A connection across the wire: (client end in A, server end in B);
    /// sends and receives on both time out after `timeout` seconds.
    func connect(timeout: Double) throws -> (client: Int32, server: Int32) {
        let client = try socketIn(namespace: clientNamespace)
        setTimeouts(client, seconds: timeout)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = Self.serverAddress.bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let text = errnoText()
            close(client)
            throw BenchError("connect across the delay line: \(text)")
        }
        let server: Int32
        do { server = try Loopback.accept(listener) } catch {  // the listener's receive timeout bounds it
            close(client)
            throw BenchError("across the delay line: \(error)")
        }
        setTimeouts(server, seconds: timeout)
        return (client, server)
    }

    /// Ends the delay line (SIGTERM) and deletes the namespaces; its STATS line, if it printed one.
    @discardableResult
    func stop() -> String? {
        guard !stopped else { return nil }
        if listener >= 0 { close(listener) }
        let stats = readLine(output.fileHandleForReading.fileDescriptor, timeout: 0, endProcess: process)
        end()
        return stats.hasPrefix("STATS") ? stats : nil
    }

    private func end() {
        stopped = true
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = now() + 5
            while process.isRunning && now() < deadline { usleep(5_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        if process.processIdentifier > 0 { Cleanup.shared.untrack(process.processIdentifier) }
        Cleanup.shared.runNow(name)
    }

    private static func listen(in namespace: String) throws -> (Int32, UInt16) {
        let fd = try socketIn(namespace: namespace)
        setTimeouts(fd, seconds: 10)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = serverAddress.bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && Glibc.listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            let text = errnoText()
            close(fd)
            throw BenchError("listen on 10.77.0.2 in \(namespace): \(text)")
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// The checkout: Tests/tools next to the working directory or above the built binary.
    private static func repositoryRoot() throws -> String {
        var candidates = [FileManager.default.currentDirectoryPath]
        var directory = URL(fileURLWithPath: buildDirectory)
        for _ in 0..<5 {
            candidates.append(directory.path)
            directory.deleteLastPathComponent()
        }
        guard let root = candidates.first(where: { FileManager.default.fileExists(atPath: $0 + "/Tests/tools/delayline.c") }) else {
            throw BenchError("Tests/tools/delayline.c not found (run the bench from the checkout)")
        }
        return root
    }
}

/// A TCP socket created in a network namespace (/run/netns/NAME): a thread
/// of its own joins the namespace, creates it, and ends. The socket stays
/// in that namespace whichever thread uses it.
func socketIn(namespace: String) throws -> Int32 {
    let worker = Worker { () -> Result<Int32, BenchError> in
        let namespaceFD = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard namespaceFD >= 0 else { return .failure(BenchError("open /run/netns/\(namespace): \(errnoText())")) }
        defer { close(namespaceFD) }
        // setns(2) is not in Swift's Glibc module.
        guard let symbol = dlsym(nil, "setns") else { return .failure(BenchError("no setns in libc")) }
        let setns = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        guard setns(namespaceFD, 0x4000_0000 /* CLONE_NEWNET */) == 0 else {
            return .failure(BenchError("setns into \(namespace): \(errnoText())"))
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(BenchError("socket in \(namespace): \(errnoText())")) }
        return .success(fd)
    }
    return try worker.join().get()
}

/// Send and receive (and connect and accept) fail with EAGAIN after `seconds`.
func setTimeouts(_ fd: Int32, seconds: Double) {
    var time = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
}

/// One line of a child's output within `timeout` seconds ("" if none). With
/// `endProcess`, the process is asked to end first (SIGTERM) and given 5 s to say its last line.
func readLine(_ fd: Int32, timeout: Double, endProcess: Process? = nil) -> String {
    var deadline = now() + timeout
    if let process = endProcess, process.isRunning {
        kill(process.processIdentifier, SIGTERM)
        deadline = now() + 5
    }
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while now() < deadline {
        var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollFD, 1, 20) > 0 else { continue }
        guard read(fd, &byte, 1) == 1 else { break }  // EOF: the child ended
        if byte == UInt8(ascii: "\n") { break }
        bytes.append(byte)
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Runs a command to its end within `timeout` seconds; throws unless it exits 0.
func runCommand(_ executable: String, _ arguments: [String], timeout: Double) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    Cleanup.shared.track(process.processIdentifier)
    defer { Cleanup.shared.untrack(process.processIdentifier) }
    let deadline = now() + timeout
    while process.isRunning && now() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw BenchError("\(executable) \(arguments.joined(separator: " ")) did not end within \(format(timeout, 0)) s")
    }
    guard process.terminationReason == .exit, process.terminationStatus == 0 else {
        throw BenchError("\(executable) \(arguments.joined(separator: " ")) failed (status \(process.terminationStatus)); its stderr is above")
    }
}
