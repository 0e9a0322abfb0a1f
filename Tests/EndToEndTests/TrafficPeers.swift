import Foundation
import Glibc

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
    static func exchange(family: String, clientName: String, serverName: String,
                         clientSends: UInt64, serverSends: UInt64, peek: Bool = false, seed: Int = 1) throws -> Exchange {
        let server = try LinePeer(["serve", "--family", family, "--name", serverName,
                                   "--receive", "\(clientSends)", "--send", "\(serverSends)", "--seed", "\(seed)"]
                                  + (peek ? ["--peek"] : []))
        let (serverPID, serverPort) = try server.readReady()
        let client = try LinePeer(["connect", "--family", family, "--name", clientName, "--port", "\(serverPort)",
                                   "--send", "\(clientSends)", "--receive", "\(serverSends)", "--seed", "\(seed + 1)"])
        let (clientPID, clientPort) = try client.readReady()
        try client.waitDone()
        try server.waitDone()
        return Exchange(family: family, clientPID: clientPID, clientPort: clientPort, clientName: clientName,
                        serverPID: serverPID, serverPort: serverPort, serverName: serverName,
                        clientSent: clientSends, serverSent: serverSends)
    }
}

struct PeerError: Error, CustomStringConvertible { let description: String }

/// A child process whose stdout is read line by line. With `hold`, the
/// peer keeps its connection open after the transfer until `release()`.
final class LinePeer {
    let process = Process()
    private let output = Pipe()
    private let input = Pipe()
    private var buffer: [UInt8] = []

    init(_ arguments: [String], hold: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [TrafficPeers.script] + arguments + (hold ? ["--hold"] : [])
        process.standardOutput = output
        process.standardInput = hold ? input : FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    func release() { input.fileHandleForWriting.write(Data("\n".utf8)) }

    func waitFor(_ expected: String) throws {
        let line = try readLine()
        guard line == expected else { throw PeerError(description: "expected \(expected), peer said \(line)") }
        if expected == "DONE" { process.waitUntilExit() }
    }

    func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { throw PeerError(description: "peer \(process.arguments ?? []) exited early") }
            buffer += data
        }
    }

    func readReady() throws -> (UInt32, UInt16) {
        let line = try readLine()
        var fields: [String: String] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard line.hasPrefix("READY"), let pid = fields["pid"].flatMap({ UInt32($0) }),
            let port = fields["port"].flatMap({ UInt16($0) })
        else { throw PeerError(description: "unexpected peer line: \(line)") }
        return (pid, port)
    }

    func waitDone() throws {
        let line = try readLine()
        process.waitUntilExit()
        if line != "DONE" || process.terminationStatus != 0 {
            throw PeerError(description: "peer ended with \(line), status \(process.terminationStatus)")
        }
    }
}

let runningAsRoot = getuid() == 0
