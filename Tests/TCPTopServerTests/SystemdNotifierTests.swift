import Foundation
import Glibc
import Testing
@testable import TCPTopServer

/// The notifier against a datagram socket in an abstract name that nobody
/// reads until the test says: calls never wait, state changes come in
/// order, STATUS only the latest, WATCHDOG=1 once per wait.
@Suite struct SystemdNotifierTests {
    final class Reader {
        let name = "tcptop-notify-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd: Int32

        init() throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = [0] + Array(name.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
            }
            guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        }

        deinit { close(fd) }

        /// Every message that arrives within `timeout` seconds of the last.
        func drain(quiet timeout: Int32 = 500) -> [String] {
            var messages: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pollFD, 1, timeout) > 0 else { return messages }
                let count = recv(fd, &buffer, buffer.count, 0)
                if count > 0 { messages.append(String(decoding: buffer[0..<count], as: UTF8.self)) }
            }
        }
    }

    @Test func nothingWaitsForAReaderAndNoStateIsLost() throws {
        let reader = try Reader()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + reader.name], statusInterval: 0.2)
        #expect(notifier.isEnabled)
        notifier.start()
        let start = monotonicSeconds()
        notifier.ready(status: "first")
        for reload in 0..<40 {
            notifier.reloading()
            for step in 0..<50 { notifier.status("reload \(reload) step \(step)") }
            notifier.ready(status: "after reload \(reload)")
        }
        var callSeconds = monotonicSeconds() - start
        // The pings come once the reader's queue is full (at most 1 s), so
        // that how many are sent does not depend on how the notifier thread
        // was scheduled before: from then on they can only be coalesced.
        let filled = monotonicSeconds() + 1
        while notifier.statistics.waitsForRoom == 0 && monotonicSeconds() < filled { usleep(1_000) }
        #expect(notifier.statistics.waitsForRoom > 0, "the reader's queue filled")
        let pingsStart = monotonicSeconds()
        for _ in 0..<40 { notifier.watchdogPing() }
        for poll in 0..<1000 { notifier.status("poll \(poll)") }
        notifier.stopping()
        callSeconds += monotonicSeconds() - pingsStart
        // 40 reloads, 3,000 STATUS and 40 pings, with nobody reading: no call waited.
        #expect(callSeconds < 0.5)
        usleep(300_000)

        let messages = reader.drain()
        let states = messages.filter { !$0.hasPrefix("STATUS=") && $0 != "WATCHDOG=1" }
        // The first READY=1, the last reload and STOPPING=1 always arrive, in order;
        // reloads folded while queued leave the bound.
        #expect(states.first == "READY=1\nSTATUS=first")
        #expect(states.last == "STOPPING=1\nSTATUS=Stopping")
        #expect(states.dropLast().last == "READY=1\nSTATUS=after reload 39")
        #expect(states.count <= SystemdNotifier.maximumQueuedStates + 12, "\(states.count) states")
        for (index, state) in states.enumerated() where state.hasPrefix("RELOADING=1") {
            #expect(states[index + 1].hasPrefix("READY=1"), "a RELOADING=1 is followed by its READY=1")
        }
        #expect(notifier.statistics.coalescedReloads > 0)
        // STATUS never more than the few the interval allows, and never an old one after a newer.
        let statusOnly = messages.filter { $0.hasPrefix("STATUS=") }
        #expect(statusOnly.count <= 3, "\(statusOnly)")
        #expect(messages.filter { $0 == "WATCHDOG=1" }.count <= 2)
        #expect(notifier.flush(timeout: 1))
    }

    @Test func statusIsSentOnlyWhenItSaysSomethingNew() throws {
        let reader = try Reader()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + reader.name], statusInterval: 0.1)
        notifier.start()
        notifier.ready(status: "same")
        for _ in 0..<20 {
            notifier.status("same")
            usleep(20_000)
        }
        notifier.status("new")
        #expect(reader.drain(quiet: 400) == ["READY=1\nSTATUS=same", "STATUS=new"])
    }

    @Test func withoutNotifySocketNothingIsSent() {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        notifier.start()
        notifier.ready(status: "x")
        #expect(notifier.flush(timeout: 0.1))
        #expect(notifier.statistics.sent == 0)
    }
}
