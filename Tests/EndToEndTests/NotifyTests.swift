import Foundation
import Glibc
import TCPTopCore
import Testing

/// sd_notify never holds up the accounting: a NOTIFY_SOCKET whose queue is
/// full and that nobody reads (a stuck PID 1), a churn of short loopback
/// connections and two reloads; the daemon keeps reading the kernel (every
/// close attributed, exact totals), and once the socket is read at last every
/// state change arrives, in order, with watchdog pings and a coalesced STATUS.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct NotifyTests {
    @Test func aNotifySocketNobodyReadsDoesNotStopThePolls() throws {
        let notify = try NotifySocket(reading: false)
        let filled = try notify.fill()
        #expect(filled > 0)
        // The default capacity: the suites running beside this one move
        // bytes on thousands of sockets of their own, which this daemon
        // counts too (CI lost 423 and 578 of the churn's connections to
        // unattributed at 4096 and 8192 sockets, the test taking 35 s instead
        // of 8). That the polls go on is seen directly: scrapes during the
        // churn show its bytes growing, which stopped polls would not.
        let config = try writeConfig("connections:\n  poll_interval: 200ms\n  closed_retention: 1h\n")
        let daemon = try ExporterProcess(arguments: ["--config.file", config], environment: ["WATCHDOG_USEC": "1000000"],
                                         notify: notify)
        try waitServing(daemon, timeout: 15)

        let churn = try LoopbackChurn()
        let pid = "\(getpid())", port = "\(churn.port)"
        func total(_ samples: [ParsedSample], _ name: String, _ end: String) -> Double {
            samples.filter { $0.name == name && $0.labels["pid"] == pid && $0.labels[end] == port }.reduce(0) { $0 + $1.value }
        }
        let target = 12_000, pace = 2_000.0
        var seenDuringChurn: [Double] = []  // the client ends' sent bytes, at each third
        let started = Date()
        while churn.count < target && Date().timeIntervalSince(started) < 30 {
            try churn.once()
            let elapsed = Date().timeIntervalSince(started)
            if Double(churn.count) > elapsed * pace { usleep(UInt32((Double(churn.count) / pace - elapsed) * 1e6)) }
            if seenDuringChurn.count < 2 && churn.count > (seenDuringChurn.count + 1) * target / 3 {
                seenDuringChurn.append(total(try daemon.metrics(), "tcptop_sent_bytes_total", "rport"))
                daemon.signal(SIGHUP)
            }
        }
        let reloads = seenDuringChurn.count
        #expect(reloads == 2)
        try #require(churn.count == target, "only \(churn.count) connections in 30 s")
        #expect(seenDuringChurn.first ?? 0 > 0 && seenDuringChurn == seenDuringChurn.sorted() && Set(seenDuringChurn).count == 2,
                "the churn's bytes at a third and two thirds of it: \(seenDuringChurn)")
        try waitLog(daemon, "configuration reloaded", count: reloads, timeout: 10)

        // The polls went on: /metrics answers, and every close was attributed.
        let samples = try daemon.metrics()
        let connections = Double(churn.count)
        #expect(value(samples, "tcptop_exporter_closes_not_recorded_total", [:]) == 0)
        let unattributed = (value(samples, "tcptop_unattributed_bytes_total", ["direction": "sent"]) ?? -1)
            + (value(samples, "tcptop_unattributed_bytes_total", ["direction": "received"]) ?? -1)
        #expect(unattributed == 0, """
            \(unattributed) bytes unattributed after \(churn.count) connections in \
            \(Int(Date().timeIntervalSince(started))) s; sockets tracked at the last read: \
            \(value(samples, "tcptop_exporter_map_entries", [:]) ?? -1); the daemon's log: \(daemon.log)
            """)
        // Client ends (remote port = the listener), then server ends.
        #expect(total(samples, "tcptop_sent_bytes_total", "rport") == connections * Double(LoopbackChurn.request))
        #expect(total(samples, "tcptop_received_bytes_total", "rport") == connections * Double(LoopbackChurn.reply))
        #expect(total(samples, "tcptop_sent_bytes_total", "lport") == connections * Double(LoopbackChurn.reply))
        #expect(total(samples, "tcptop_received_bytes_total", "lport") == connections * Double(LoopbackChurn.request))
        #expect(!daemon.log.contains("reading the kernel maps failed"))

        // Read at last: the fillers, then READY=1, two reloads, each state
        // in order; watchdog pings; STATUS only the latest, not one per poll.
        notify.startReading()
        try daemon.waitNotify("READY=1", count: 3, timeout: 10)
        try daemon.waitNotify("WATCHDOG=1", timeout: 5)
        let messages = notify.messages
        #expect(messages.prefix(filled).allSatisfy { $0.hasPrefix("FILLER=") })
        let states = messages.compactMap { message -> String? in
            ["READY=1", "RELOADING=1", "STOPPING=1"].first { message.hasPrefix($0) }
        }
        #expect(states == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"])
        let statusOnly = messages.filter { $0.hasPrefix("STATUS=") }
        #expect(statusOnly.count <= 2, "STATUS-only messages: \(statusOnly)")

        daemon.signal(SIGTERM)
        try daemon.waitNotify("STOPPING=1", timeout: 5)
        #expect(try daemon.waitExit() == 0)
    }

    /// /metrics answering (the notify socket cannot say READY=1: nobody reads it).
    private func waitServing(_ daemon: ExporterProcess, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while (try? daemon.get().status) != 200 {
            guard daemon.process.isRunning else { throw PeerError(description: "the daemon exited: \(daemon.log)") }
            guard Date() < deadline else { throw PeerError(description: "no scrape answered within \(timeout) s: \(daemon.log)") }
            usleep(50_000)
        }
    }

    private func waitLog(_ daemon: ExporterProcess, _ text: String, count: Int, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while daemon.log.components(separatedBy: text).count - 1 < count {
            guard Date() < deadline else { throw PeerError(description: "\(count) × \"\(text)\" not logged within \(timeout) s: \(daemon.log)") }
            usleep(50_000)
        }
    }
}

/// Short TCP connections over loopback, one after the other, in this
/// process: each sends `request` bytes, gets `reply` bytes back, and ends
/// with a reset from the server (so no TIME_WAIT holds the ports).
final class LoopbackChurn {
    static let request = 100
    static let reply = 37
    let port: UInt16
    private let listener: Int32
    private(set) var count = 0

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 64) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard bound else { throw PeerError(description: "churn listener: \(String(cString: strerror(errno)))") }
        port = UInt16(bigEndian: address.sin_port)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(listener) }

    func once() throws {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = Self.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw PeerError(description: "churn connect: \(String(cString: strerror(errno)))") }
        let server = accept(listener, nil, nil)
        guard server >= 0 else { throw PeerError(description: "churn accept: \(String(cString: strerror(errno)))") }
        defer {
            var reset = linger(l_onoff: 1, l_linger: 0)
            setsockopt(server, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
            close(server)
        }
        setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try Self.exchange(from: client, to: server, Self.request)
        try Self.exchange(from: server, to: client, Self.reply)
        count += 1
    }

    private static func exchange(from sender: Int32, to receiver: Int32, _ size: Int) throws {
        let bytes = [UInt8](repeating: 0x61, count: size)
        guard send(sender, bytes, size, Int32(MSG_NOSIGNAL)) == size else { throw PeerError(description: "churn send failed") }
        var buffer = [UInt8](repeating: 0, count: size)
        var got = 0
        while got < size {
            let count = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress! + got, size - got, 0) }
            guard count > 0 else { throw PeerError(description: "churn recv: \(count == 0 ? "closed" : String(cString: strerror(errno)))") }
            got += count
        }
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
