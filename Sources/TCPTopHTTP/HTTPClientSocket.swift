import Glibc

/// The client's socket steps: resolve and connect without blocking past a
/// deadline, and wait for readiness in poll slices.
enum HTTPClientSocket {
    /// A non-blocking socket connected to the first address of `host` that
    /// accepts (names through getaddrinfo, literals as they are).
    static func connect(host: String, port: UInt16, label: String, options: HTTPClient.Options,
                        deadline: ContinuousClock.Instant) throws(HTTPClientError) -> Int32
    {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            let reason = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            throw HTTPClientError(.resolve, "resolve \(host): \(reason)")
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = EADDRNOTAVAIL
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            entry = current.pointee.ai_next
            let flags = Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)
            let fd = socket(current.pointee.ai_family, current.pointee.ai_socktype | flags, 0)
            guard fd >= 0 else {
                lastError = errno
                continue
            }
            if var size = options.receiveBufferBytes {
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            if Glibc.connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 { return fd }
            lastError = errno
            if lastError == EINPROGRESS {
                do {
                    try wait(fd, for: POLLOUT, until: deadline, options: options, doing: "connecting to \(label)")
                } catch {
                    close(fd)
                    throw error
                }
                var socketError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
                if socketError == 0 { return fd }
                lastError = socketError
            }
            close(fd)
        }
        throw HTTPClientError(.connect(errno: lastError), "connect \(label): \(String(cString: strerror(lastError)))")
    }

    /// Waits until `fd` is ready for `event`. With `options.interrupted`, in
    /// 100 ms slices so that it is seen at once.
    static func wait(_ fd: Int32, for event: Int32, until deadline: ContinuousClock.Instant, options: HTTPClient.Options,
                     doing what: String) throws(HTTPClientError)
    {
        while true {
            if options.interrupted?() == true { throw HTTPClientError(.interrupted, "interrupted while \(what)") }
            var left = deadline - .now
            guard left > .zero else {
                throw HTTPClientError(.timedOut, "timed out after \(secondsText(options.timeout)) \(what)")
            }
            if options.interrupted != nil { left = min(left, .milliseconds(100)) }
            let (seconds, attoseconds) = left.components
            let milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            var poller = pollfd(fd: fd, events: Int16(event), revents: 0)
            let ready = poll(&poller, 1, milliseconds)
            // Errors and hang-ups count as ready: the next send, recv or SO_ERROR tells which.
            if ready > 0 { return }
            if ready < 0 && errno != EINTR {
                throw HTTPClientError(.io(errno: errno), "\(what): poll: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// `5 s`, `0.3 s`.
    static func secondsText(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 { return "\(seconds) s" }
        let value = Double(seconds) + Double(attoseconds) / 1e18
        return "\((value * 1000).rounded() / 1000) s"
    }
}
