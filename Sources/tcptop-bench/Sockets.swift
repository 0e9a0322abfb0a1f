import Foundation
import Glibc

/// IPv4 loopback TCP sockets, blocking.
enum Loopback {
    /// A listener on 127.0.0.1 with a kernel-chosen port.
    static func listen(backlog: Int32 = 4096) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(errnoText())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = address(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && Glibc.listen(fd, backlog) == 0
                    && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            let text = errnoText()
            close(fd)
            throw BenchError("listen on 127.0.0.1: \(text)")
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    static func connect(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(errnoText())") }
        var address = address(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let text = errnoText()
            close(fd)
            throw BenchError("connect to 127.0.0.1:\(port): \(text)")
        }
        return fd
    }

    static func accept(_ listener: Int32) throws -> Int32 {
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { throw BenchError("accept: \(errnoText())") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)  // the bench spawns children; they must not hold these
        return fd
    }

    /// A connected pair: (client end, server end).
    static func pair(listener: Int32, port: UInt16) throws -> (Int32, Int32) {
        let client = try connect(port: port)
        do {
            return (client, try accept(listener))
        } catch {
            close(client)
            throw error
        }
    }

    /// 1-byte messages must leave at once, not wait for Nagle.
    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Close with a reset: no TIME_WAIT left behind (churn would run out of ports).
    static func closeAbortively(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
    }

    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            guard sent > 0 else { throw BenchError("send: \(errnoText())") }
            offset += sent
        }
    }

    /// Reads until the peer closes; returns the byte count.
    @discardableResult
    static func drain(_ fd: Int32, bufferSize: Int = 1 << 20) -> Int {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            let count = recv(fd, buffer, bufferSize, 0)
            if count <= 0 { return total }
            total += count
        }
    }

    private static func address(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }
}

/// One loopback connection whose receiving end a second thread drains, for
/// the send-side workloads. `finish()` ends the stream and waits for the drain.
final class DrainedConnection {
    let client: Int32
    private let receiver: Worker<Int>

    init() throws {
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        let (client, server) = try Loopback.pair(listener: listener, port: port)
        self.client = client
        receiver = Worker {
            defer { close(server) }
            return Loopback.drain(server)
        }
    }

    func finish() {
        shutdown(client, Int32(SHUT_WR))
        _ = receiver.join()
        close(client)
    }
}
