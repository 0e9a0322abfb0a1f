import Glibc
import TCPTopCore

/// `--from`: one HTTP/1.1 GET per call over a plain socket (the reply is
/// read until the server closes). Each step polls in short slices so that a
/// stop signal is noticed at once; the whole fetch gives up after `timeout`.
struct MetricsFetcher {
    let url: TopMetricsURL
    var timeout = 5.0

    /// The exporter's series now.
    func readings() throws -> [TopCounterReading<ConnectionLabels>] {
        let reply: [UInt8]
        do {
            reply = try fetch()
        } catch let failure as TopScrapeError {
            throw TopScrapeError("--from \(url): \(failure)")
        }
        do {
            let body = try TopScrape.body(ofReply: reply)
            let samples = try ExpositionParser.parse(String(decoding: body, as: UTF8.self))
            return TopScrape.readings(from: samples)
        } catch {
            throw TopScrapeError("--from \(url): \(error)")
        }
    }

    private func fetch() throws -> [UInt8] {
        let deadline = StopSignals.now() + timeout
        let fd = try connect(deadline: deadline)
        defer { close(fd) }
        var request = Array(url.request.utf8)[...]
        while !request.isEmpty {
            try waitFor(fd, POLLOUT, deadline: deadline, doing: "sending the request")
            let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw TopScrapeError("sending the request: \(String(cString: strerror(errno)))")
            }
            request = request.dropFirst(sent)
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            try waitFor(fd, POLLIN, deadline: deadline, doing: "reading the reply")
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return reply }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw TopScrapeError("reading the reply: \(String(cString: strerror(errno)))")
            }
            reply += buffer[0..<count]
        }
    }

    /// A non-blocking socket connected to the first address that answers.
    private func connect(deadline: Double) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let err = getaddrinfo(url.host, String(url.port), &hints, &list)
        guard err == 0, let first = list else {
            throw TopScrapeError("cannot resolve \(url.host): \(String(cString: gai_strerror(err)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            entry = current.pointee.ai_next
            let fd = socket(current.pointee.ai_family, current.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = String(cString: strerror(errno)); continue }
            if Glibc.connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 { return fd }
            if errno == EINPROGRESS {
                do {
                    try waitFor(fd, POLLOUT, deadline: deadline, doing: "connecting")
                    var soError: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                    if soError == 0 { return fd }
                    lastError = String(cString: strerror(soError))
                } catch {
                    close(fd)
                    throw error
                }
            } else {
                lastError = String(cString: strerror(errno))
            }
            close(fd)
        }
        throw TopScrapeError("cannot connect to \(url.hostText):\(url.port): \(lastError)")
    }

    /// Waits until `fd` is ready for `event`, in 100 ms slices, watching for stop signals.
    private func waitFor(_ fd: Int32, _ event: Int32, deadline: Double, doing what: String) throws {
        while true {
            if StopSignals.isPending() { throw StopSignals.Stopped() }
            let left = deadline - StopSignals.now()
            if left <= 0 { throw TopScrapeError("\(what): timed out after \(Int(timeout)) s") }
            var poller = pollfd(fd: fd, events: Int16(event), revents: 0)
            let ready = poll(&poller, 1, Int32(min(left, 0.1) * 1000) + 1)
            if ready > 0 { return }
            if ready < 0 && errno != EINTR { throw TopScrapeError("\(what): \(String(cString: strerror(errno)))") }
        }
    }
}
