import Foundation
import Glibc
import TestChildProcess

/// A wire with delay and loss between two network namespaces: the
/// namespaces made by Tests/tools/delayline-netns.sh, the packets carried
/// by Tests/tools/delayline.c (built with clang on first use). A is the
/// client's side (10.77.0.1), B the server's (10.77.0.2). Deinit ends the
/// delay line and deletes both namespaces.
final class DelayLine {
    static let clientAddress = "10.77.0.1", serverAddress = "10.77.0.2"
    static let tool: Result<String, any Error> = Result { try build() }

    let name = "tt-dl-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
    var clientNamespace: String { name + "-a" }
    var serverNamespace: String { name + "-b" }
    private let process = ChildProcess()
    private let output = PipeReader()
    private let errors = PipeReader()

    struct Stats: Equatable {
        var forwardedAB = 0, forwardedBA = 0, droppedAB = 0, droppedBA = 0, overflow = 0
    }

    /// `arguments` are delayline's options past the namespaces, e.g.
    /// `["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data", "--drop-side", "a"]`.
    init(_ arguments: [String], seconds: Int = 60) throws {
        let tool = try Self.tool.get()
        try Self.run(Self.script, ["up", name])
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["--ns-a", clientNamespace, "--ns-b", serverNamespace, "--seconds", "\(seconds)"] + arguments
        process.standardOutput = output.pipe
        process.standardError = errors.pipe
        do {
            try process.run()
            let line = output.readLine(until: Date().addingTimeInterval(10))
            guard case .line(let ready) = line, ready.hasPrefix("READY") else {
                throw PeerError(description: "delayline said \(line) instead of READY; its stderr: \(errors.rest())")
            }
        } catch {
            Child.stop(process)
            try? Self.run(Self.script, ["down", name])
            throw error
        }
    }

    deinit {
        Child.stop(process)
        try? Self.run(Self.script, ["down", name])
    }

    /// Ends the delay line (SIGTERM) and returns the counts it printed.
    func stop() throws -> Stats {
        Child.stop(process)
        let text = output.rest(timeout: 5)
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("STATS") }) else {
            throw PeerError(description: "delayline (\(Child.ending(process))) printed no STATS: \(text.debugDescription); its stderr: \(errors.rest())")
        }
        var fields: [String: Int] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let pair = part.split(separator: "=")
            if pair.count == 2 { fields[String(pair[0])] = Int(pair[1]) }
        }
        return Stats(forwardedAB: fields["forwarded_ab"] ?? -1, forwardedBA: fields["forwarded_ba"] ?? -1,
                     droppedAB: fields["dropped_ab"] ?? -1, droppedBA: fields["dropped_ba"] ?? -1,
                     overflow: fields["overflow"] ?? -1)
    }

    /// Sets a sysctl inside the client's namespace only.
    func clientSysctl(_ setting: String) throws {
        try Self.run("/usr/sbin/ip", ["netns", "exec", clientNamespace, "sysctl", "-q", "-w", setting])
    }

    static let script = TrafficPeers.packageRoot.appending(path: "Tests/tools/delayline-netns.sh").path

    private static func build() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appending(path: "tcptop-delayline-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let binary = directory.appending(path: "delayline").path
        let source = TrafficPeers.packageRoot.appending(path: "Tests/tools/delayline.c").path
        try run("/usr/bin/env", ["clang", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, source], timeout: 60)
        return binary
    }

    /// Runs a command to its end within `timeout` seconds; throws, with its
    /// stderr, unless it exits 0.
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 15) throws {
        let process = ChildProcess(), errors = PipeReader()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardError = errors.pipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let said = errors.rest(timeout: timeout)
        guard Child.waitExit(process, timeout: 5) else {
            Child.stop(process)
            throw PeerError(description: "\(executable) \(arguments.joined(separator: " ")) did not end within \(timeout) s")
        }
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw PeerError(description: "\(executable) \(arguments.joined(separator: " ")) \(Child.ending(process)): \(said)")
        }
    }
}
