import Glibc

/// Blocking-style I/O on a non-blocking socket: every wait is a poll() with a
/// deadline, so no single peer can hold a thread longer than its timeout.
struct HTTPSocket {
    let fd: Int32
    /// Readable once the server stops; watched while waiting for a request.
    let stopFD: Int32

    enum ReadOutcome: Equatable { case read(Int), endOfStream, timedOut, stopped, failed }

    /// Appends what is available (waiting until `deadline`) to `buffer`.
    func read(into buffer: inout [UInt8], until deadline: ContinuousClock.Instant, watchStop: Bool) -> ReadOutcome {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                buffer.append(contentsOf: chunk[..<count])
                return .read(count)
            }
            if count == 0 { return .endOfStream }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK:
                switch wait(for: Int16(POLLIN), until: deadline, watchStop: watchStop) {
                case .ready: continue
                case .timedOut: return .timedOut
                case .stopped: return .stopped
                }
            default: return .failed
            }
        }
    }

    /// Sends all of `bytes` before `deadline`. MSG_NOSIGNAL: a peer that went
    /// away must yield EPIPE, not a SIGPIPE that kills the daemon.
    func write(_ bytes: [UInt8], until deadline: ContinuousClock.Instant, more: Bool = false) -> Bool {
        let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        var offset = 0
        return bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let sent = send(fd, raw.baseAddress! + offset, raw.count - offset, flags)
                if sent >= 0 { offset += sent; continue }
                switch errno {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK:
                    guard wait(for: Int16(POLLOUT), until: deadline, watchStop: false) == .ready else { return false }
                default: return false
                }
            }
            return true
        }
    }

    /// Call before closing after a response: half-close, then read and drop
    /// what the peer still sends for a moment. Closing with unread input makes
    /// the kernel send RST, which can destroy the response before the client reads it.
    func linger(for duration: Duration = .milliseconds(500)) {
        shutdown(fd, Int32(SHUT_WR))
        let deadline = ContinuousClock.now + duration
        var discard: [UInt8] = []
        var total = 0
        while total < 256 * 1024, case .read(let count) = read(into: &discard, until: deadline, watchStop: false) {
            total += count
            discard.removeAll(keepingCapacity: true)
        }
    }

    private enum WaitOutcome { case ready, timedOut, stopped }

    private func wait(for events: Int16, until deadline: ContinuousClock.Instant, watchStop: Bool) -> WaitOutcome {
        var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return .timedOut }
            let milliseconds = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            let count = poll(&fds, watchStop ? 2 : 1, milliseconds)
            if count < 0, errno == EINTR { continue }
            if count < 0 { return .ready }  // Let the following recv/send report the error.
            if watchStop, fds[1].revents != 0 { return .stopped }
            if fds[0].revents != 0 { return .ready }
        }
    }
}
