import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore
import TCPTopHTTP
import TCPTopServer
import Testing

/// A scrape's sink is called without the collector's lock: while a client
/// does not read (the sink blocks), the poll that reads the kernel, the
/// connection count and another scrape all go on.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct CollectorLockTests {
    @Test func aBlockedSinkDoesNotStallPollsOrOtherScrapes() throws {
        let tracer = try TCPTracer.start(.init())
        let collector = MetricsCollector(tracer: tracer, registry: ConnectionRegistry(closedRetention: 300), version: "test")
        let inSink = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let result = Locked<(released: Bool, bytes: Int)>((false, 0))
        Thread.detachNewThread {
            var bytes = 0
            var released = false
            collector.scrape { piece in
                if bytes == 0 {
                    inSink.signal()
                    released = release.wait(timeout: .now() + 20) == .success  // bounded: never hangs the suite
                }
                bytes += piece.count
            }
            result.withLock { $0 = (released, bytes) }
            finished.signal()
        }
        #expect(inSink.wait(timeout: .now() + 10) == .success, "the scrape never reached its sink")

        // A socket closed since the last read makes the poll read the kernel (under the lock).
        try openAndCloseLoopbackConnection()
        let deadline = Date().addingTimeInterval(5)
        while try !tracer.hasClosesSinceLastRead() && Date() < deadline { usleep(10_000) }
        #expect(try tracer.hasClosesSinceLastRead(), "the kernel did not count the close")
        let start = Date()
        try collector.poll()
        _ = collector.trackedConnections
        let other = collector.scrape()
        let seconds = Date().timeIntervalSince(start)
        #expect(seconds < 2, "poll, count and a second scrape took \(seconds) s while a sink was blocked")
        #expect(String(decoding: other, as: UTF8.self).contains("tcptop_exporter_scrapes_total 0\n"))
        #expect(!(try tracer.hasClosesSinceLastRead()), "the poll did not read the kernel")

        release.signal()
        #expect(finished.wait(timeout: .now() + 10) == .success, "the blocked scrape did not finish once released")
        let (released, bytes) = result.withLock { $0 }
        #expect(released)
        #expect(bytes > 0)
        // Both scrapes are counted once they are done.
        #expect(String(decoding: collector.scrape(), as: UTF8.self).contains("tcptop_exporter_scrapes_total 2\n"))
    }

    private func openAndCloseLoopbackConnection() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && listen(listener, 1) == 0
                    && getsockname(listener, pointer, &length) == 0
            }
        }
        #expect(bound)
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) == 0 }
        }
        #expect(connected)
        let server = accept(listener, nil, nil)
        var byte: UInt8 = 1
        #expect(send(client, &byte, 1, 0) == 1)
        // Linger 0: close sends a reset and the socket is destroyed at once.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(client)
        close(server)
    }
}
