import Dispatch
import Glibc

/// A listener on 127.0.0.1 that answers with fixed bytes, for the replies
/// HTTPServer never sends (chunked, close-delimited, malformed, silent).
/// It accepts one connection; for each reply it reads one request head and
/// writes the reply; then it closes the connection, or holds it until
/// `stop`. With `accepting: false` nothing is ever accepted. Every wait in
/// it ends within 5 s.
final class CannedReplyServer: @unchecked Sendable {
    enum Ending { case close, hold }

    let port: UInt16
    private let listener: Int32
    private let release = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let lock = DispatchQueue(label: "canned-requests")
    private var received: [[UInt8]] = []
    private var stopped = false

    /// The request heads read, in order (each with its empty line).
    var requests: [[UInt8]] { lock.sync { received } }

    init(replies: [[UInt8]], then ending: Ending = .close, accepting: Bool = true, backlog: Int32 = 16) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard fd >= 0, bound else {
            let code = errno
            close(fd)
            throw TestClient.Failure.connect(code)
        }
        listener = fd
        port = UInt16(bigEndian: address.sin_port)
        guard accepting else {
            finished.signal()
            return
        }
        DispatchQueue.global().async { [self] in
            defer { finished.signal() }
            serve(replies, then: ending)
        }
    }

    deinit { stop() }

    /// Ends the connection and the listener; returns once the serving thread is done.
    func stop() {
        guard !lock.sync(execute: { defer { stopped = true }; return stopped }) else { return }
        release.signal()
        _ = finished.wait(timeout: .now() + 10)
        close(listener)
    }

    private func serve(_ replies: [[UInt8]], then ending: Ending) {
        guard waitReadable(listener) else { return }
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var pending: [UInt8] = []
        for reply in replies {
            while pending.firstRange(of: [13, 10, 13, 10]) == nil {
                var chunk = [UInt8](repeating: 0, count: 4096)
                guard waitReadable(fd) else { return }
                let count = recv(fd, &chunk, chunk.count, 0)
                guard count > 0 else { return }
                pending += chunk[..<count]
            }
            let end = pending.firstRange(of: [13, 10, 13, 10])!.upperBound
            let head = Array(pending[..<end])
            lock.sync { received.append(head) }
            pending.removeFirst(end)
            var offset = 0
            while offset < reply.count {
                let sent = reply.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                guard sent > 0 else { return }  // the client went away (or 5 s without room)
                offset += sent
            }
        }
        if ending == .hold { _ = release.wait(timeout: .now() + 10) }
    }

    /// Waits at most 5 s, in 50 ms slices so that `stop` is seen at once.
    private func waitReadable(_ fd: Int32) -> Bool {
        for _ in 0..<100 {
            if release.wait(timeout: .now()) == .success {
                release.signal()  // leave it for the other waits
                return false
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 50) > 0 { return true }
        }
        return false
    }
}
