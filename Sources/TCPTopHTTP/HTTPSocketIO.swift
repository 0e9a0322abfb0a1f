import Glibc

/// Blocking-style writes on a non-blocking socket, for the worker that
/// answers a request: every wait is a poll() bounded by the response's
/// deadline, so no client can hold a worker longer than the write timeout.
/// Plain or TLS alike (TLS may need the socket readable to write).
struct HTTPSocket {
    let transport: HTTPTransport
    let deadline: ContinuousClock.Instant

    /// The client is gone, or did not take the response before the deadline.
    struct WriteFailed: Error, CustomStringConvertible {
        var description: String { "the client went away or did not read in time" }
    }

    /// Sends all of `bytes`. `more`: more follows at once.
    func write(_ bytes: [UInt8], more: Bool = false) throws(WriteFailed) {
        var offset = 0
        let written = bytes.withUnsafeBytes { raw -> Bool in
            while offset < raw.count {
                // After a wait, TLS retries the same bytes (offset unchanged), as OpenSSL requires.
                switch transport.send(UnsafeRawBufferPointer(rebasing: raw[offset...]), more: more) {
                case .transferred(let sent): offset += sent
                case .wantWrite: guard wait(for: POLLOUT) else { return false }
                case .wantRead: guard wait(for: POLLIN) else { return false }
                case .closed, .error, .failed: return false
                }
            }
            return true
        }
        guard written else { throw WriteFailed() }
    }

    private func wait(for event: Int32) -> Bool {
        var entry = pollfd(fd: transport.fd, events: Int16(event), revents: 0)
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return false }
            let count = poll(&entry, 1, milliseconds(remaining))
            if count == 0 || (count < 0 && errno == EINTR) { continue }
            return true  // Ready, or an error or hang-up that the next send reports.
        }
    }
}

/// Rounded up, so a wait never ends just before its deadline; at most a day.
func milliseconds(_ duration: Duration) -> Int32 {
    let (seconds, attoseconds) = duration.components
    guard seconds < 86_400 else { return 86_400_000 }
    return Int32(max(0, seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
}

/// Sends what fits now, without waiting: for the loop's own short answers
/// (400, 408, 503), which always fit a fresh socket's buffer.
func sendNow(_ transport: HTTPTransport, _ bytes: [UInt8]) {
    _ = bytes.withUnsafeBytes { transport.send($0) }
}

/// Closes with a reset rather than an orderly end, so a client whose
/// response was cut cannot take a truncated close-delimited body for whole.
func abortConnection(_ fd: Int32) {
    var option = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    close(fd)
}
