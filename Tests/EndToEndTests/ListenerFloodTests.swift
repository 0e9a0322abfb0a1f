import Foundation
import Glibc
import TCPTopHTTP
import TestChildProcess
import Testing

/// The real daemon's listener under an idle flood and garbage.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct ListenerFloodTests {
    @Test func metricsAnswerInUnder100msWhileTenThousandConnectionsSitIdle() throws {
        // The daemon inherits this limit: 10,000 connections need more descriptors than the usual 1024.
        try raiseDescriptorLimit(atLeast: 11_000, for: "the flood")

        // One series per address family: the figure is the listener's under the flood, not the
        // rendering of whatever the suites running beside it have open on this host.
        let daemon = try ExporterProcess(arguments: ["--config.file=\(try smallViewConfig())"])
        try daemon.waitReady()
        let flood = try IdleFlood(port: daemon.port, count: 10_000, trickling: 100)
        defer { flood.end() }
        #expect(try daemon.get().status == 200)  // one scrape to warm up (and count the flood's connections)

        var times: [Double] = []
        for _ in 0..<3 {
            let started = Date()
            let reply = try daemon.get(headers: ["Accept-Encoding": "gzip"])
            times.append(Date().timeIntervalSince(started))
            #expect(reply.status == 200)
            #expect(reply.body.starts(with: [0x1f, 0x8b]))
        }
        let best = try #require(times.min())
        print("daemon scrape with 10,000 idle connections: best \(Int(best * 1000)) ms of \(times.map { Int($0 * 1000) }) ms")
        #expect(best <= 0.1, "best of 3 scrapes took \(best) s")
        // The flood is still held (nothing was evicted or refused to serve the scrapes).
        #expect(flood.isRunning)
    }

    @Test func aTLSClientHelloGets400AtOnce() throws {
        let daemon = try ExporterProcess()
        try daemon.waitReady()
        let hello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03] + Array(repeating: 0xab, count: 32)
        let started = Date()
        let reply = try rawExchange(port: daemon.port, bytes: hello)
        let elapsed = Date().timeIntervalSince(started)
        #expect(reply.starts(with: Array("HTTP/1.1 400 Bad Request\r\n".utf8)), "\(String(decoding: reply.prefix(40), as: UTF8.self))")
        #expect(elapsed < 0.1, "answered after \(elapsed) s")
    }

    /// Sends `bytes` to 127.0.0.1:`port` and reads until the server closes (at most 10 s).
    private func rawExchange(port: UInt16, bytes: [UInt8]) throws -> [UInt8] {
        var options = HTTPClient.Options()
        options.timeout = .seconds(10)
        let connection = try HTTPClient(options: options).connect(host: "127.0.0.1", port: port)
        try connection.send(bytes)
        var reply: [UInt8] = []
        while case let piece = try connection.readSome(), !piece.isEmpty { reply += piece }
        return reply
    }
}

/// Tests/idle_flood.py as a child: `count` idle connections, the first
/// `trickling` sending a byte a second, until `end()`.
/// This process's descriptor limit raised to its hard limit (which children
/// such as the daemon inherit); fails the test if that is below `needed`.
func raiseDescriptorLimit(atLeast needed: rlim_t, for what: String) throws {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    try #require(limit.rlim_max >= needed, "RLIMIT_NOFILE hard limit \(limit.rlim_max) is below \(what)")
}

final class IdleFlood {
    private let process = ChildProcess()
    private let input = Pipe()

    init(port: UInt16, count: Int, trickling: Int, timeout: Double = 60) throws {
        let output = PipeReader()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [TrafficPeers.packageRoot.appending(path: "Tests/idle_flood.py").path,
                             "--port", "\(port)", "--count", "\(count)", "--trickle", "\(trickling)"]
        process.standardInput = input
        process.standardOutput = output.pipe
        try process.run()
        let line = output.readLine(until: Date().addingTimeInterval(timeout))
        guard line == .line("READY \(count)") else {
            end()
            throw PeerError(description: "idle_flood.py did not open \(count) connections (\(line))")
        }
    }

    var isRunning: Bool { process.isRunning }

    func end() {
        try? input.fileHandleForWriting.close()  // it exits when its stdin closes
        if !Child.waitExit(process, timeout: 5) { Child.stop(process, grace: 1) }
    }

    deinit { if process.isRunning { end() } }
}
