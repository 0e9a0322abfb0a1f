import Foundation
import Glibc

/// A NOTIFY_SOCKET like systemd's: a datagram socket the daemon under test
/// sends its sd_notify messages to. Like systemd, it reads all the time (a
/// background thread), so the sender never finds the socket full; or, with
/// `reading: false`, nobody reads it until `startReading()`, like a stuck
/// PID 1 (`fill()` then takes the room the kernel leaves in its queue).
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSCondition()
    private var received: [String] = []
    private var closed = false

    var messages: [String] { lock.withLock { received } }

    init(reading: Bool = true) throws {
        path = NSTemporaryDirectory() + "tcptop-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw PeerError(description: "bind notify socket: \(String(cString: strerror(errno)))") }
        if reading { startReading() }
    }

    private var readerStarted = false

    /// Starts the reader thread (once).
    func startReading() {
        let start = lock.withLock {
            defer { readerStarted = true }
            return !readerStarted && !closed
        }
        if start { Thread.detachNewThread { [self] in receiveLoop() } }
    }

    /// Sends datagrams to the socket from another one until the kernel says
    /// its queue is full (EAGAIN); returns how many fit. Each is "FILLER=n".
    func fill() throws -> Int {
        let sender = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        defer { Glibc.close(sender) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(sender, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw PeerError(description: "connect notify socket: \(String(cString: strerror(errno)))") }
        for count in 0..<10_000 {
            let bytes = Array("FILLER=\(count)".utf8)
            if send(sender, bytes, bytes.count, Int32(MSG_DONTWAIT)) < 0 {
                guard errno == EAGAIN else { throw PeerError(description: "filling notify socket: \(String(cString: strerror(errno)))") }
                return count
            }
        }
        throw PeerError(description: "the notify socket took 10000 datagrams without filling")
    }

    deinit {
        unlink(path)
    }

    /// Ends the reader thread, which closes the socket (closes it here if
    /// it never started).
    func close() {
        let closeHere = lock.withLock {
            defer { closed = true }
            return !readerStarted && !closed
        }
        if closeHere { Glibc.close(fd) }
    }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !lock.withLock({ closed }) {
            var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pollFD, 1, 100) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            let message = String(decoding: buffer[0..<count], as: UTF8.self)
            lock.withLock {
                received.append(message)
                lock.broadcast()
            }
        }
        Glibc.close(fd)
    }

    /// Waits until the `count`-th message containing `text` arrives (at
    /// most `timeout` seconds) and returns it. `giveUp` is asked every 100 ms
    /// (e.g. "has the sender exited?"): when it says so, the wait ends early.
    func wait(for text: String, count: Int = 1, timeout: Double = 10, giveUp: () -> Bool = { false }) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        var end = deadline
        while true {
            let matching = received.filter { $0.contains(text) }
            if matching.count >= count { return matching[count - 1] }
            let now = Date()
            guard now < end else {
                throw PeerError(description: end < deadline
                    ? "gave up waiting for sd_notify message #\(count) with \(text); got \(received)"
                    : "no sd_notify message #\(count) with \(text) within \(timeout) s; got \(received)")
            }
            if !lock.wait(until: min(end, now.addingTimeInterval(0.1))) && end == deadline && giveUp() {
                // What the sender sent before it gave up may still be in the socket: a last moment for it.
                end = min(deadline, Date().addingTimeInterval(0.3))
            }
        }
    }
}
