import CTCPTop
import Glibc

/// The server's one event-loop thread: accepts on every listener, drives
/// TLS handshakes, reads and parses request heads, keeps every
/// connection's deadline, answers bad requests itself, and hands complete
/// ones to the workers. Everything here
/// belongs to that thread; workers talk to it through the server (a queue
/// and the wake eventfd).
final class HTTPEventLoop {
    private let server: HTTPServer
    private let handler: HTTPHandler
    private let configuration: HTTPServer.Configuration
    private let listeners: Set<Int32>
    private var slots: [Int32: HTTPConnectionSlot] = [:]
    private var awaitingHead = HTTPDeadlineQueue()
    private var idle = HTTPDeadlineQueue()
    private var lingering = HTTPDeadlineQueue()
    private var nextStamp: UInt64 = 0
    private var activeRequests = 0
    private var workers = 0
    private var acceptPausedUntil: UInt64?
    /// Set once stopping: when responses in flight are cut, then when the loop ends regardless.
    private var cutAt: UInt64?
    private var giveUpAt: UInt64?
    private var scratch = [UInt8](repeating: 0, count: 16 * 1024)

    private let headTimeout: UInt64, idleTimeout: UInt64
    private static let lingerTime: UInt64 = 500_000_000
    private static let lingerLimit = 256 * 1024

    init(server: HTTPServer, handler: @escaping HTTPHandler) {
        self.server = server
        self.handler = handler
        configuration = server.configuration
        listeners = Set(server.listenerFDs)
        headTimeout = configuration.headReadTimeout.nanoseconds
        idleTimeout = configuration.idleTimeout.nanoseconds
    }

    func run() {
        let epoll = server.epollFD
        _ = tcptop_epoll_add(epoll, server.wakeFD, UInt32(TCPTOP_EPOLLIN))
        for fd in listeners { _ = tcptop_epoll_add(epoll, fd, UInt32(TCPTOP_EPOLLIN)) }
        var fds = [Int32](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        var running = true
        while running {
            let count = tcptop_epoll_wait(epoll, &fds, &events, Int32(fds.count), waitMilliseconds())
            if count < 0 && errno != EINTR {
                server.logger.error("epoll_wait: \(String(cString: strerror(errno)))")
                break
            }
            for index in 0..<max(0, Int(count)) {
                let fd = fds[index]
                if fd == server.wakeFD {
                    var value: UInt64 = 0
                    _ = read(fd, &value, 8)
                    takeFinished()
                } else if listeners.contains(fd) {
                    acceptConnections(fd)
                } else {
                    readable(fd)
                }
            }
            let now = monotonicNanoseconds()
            expireDeadlines(now)
            if let until = acceptPausedUntil, now >= until, cutAt == nil { resumeAccepting() }
            if cutAt == nil, server.isStopping { beginStop(now) }
            if cutAt != nil { running = !stopStep(now) }
            server.openConnections.store(slots.count, ordering: .relaxed)
            server.requestsBeingAnswered.store(activeRequests, ordering: .relaxed)
        }
        end()
    }

    // MARK: accepting

    private func acceptConnections(_ listener: Int32) {
        for _ in 0..<64 {  // then the other events get their turn
            let fd = tcptop_accept(listener)
            guard fd >= 0 else {
                let code = errno
                switch code {
                case EAGAIN, EWOULDBLOCK: return
                case EINTR, ECONNABORTED, EPROTO: continue  // the client left before we took it
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory: make room, or stop accepting for a moment (no spinning).
                    if evictOne() { continue }
                    pauseAccepting(because: code)
                    return
                default:
                    server.logger.error("accept: \(String(cString: strerror(code)))")
                    return
                }
            }
            // The TLS context in force now: a rotated certificate is served from the next connection on.
            let transport: HTTPTransport
            switch configuration.security() {
            case .plain: transport = .plain(fd)
            case .tls(let context):
                guard let session = TLSSession(server: context, fd: fd) else { close(fd); continue }
                transport = .tls(session)
            case .refuse:
                close(fd)
                continue
            }
            // Connections answered meanwhile are idle now, and may be evicted.
            if slots.count >= configuration.maxConnections { takeFinished() }
            if slots.count >= configuration.maxConnections, !evictOne() {
                // Every connection is being answered: nothing to give up for this one (TLS: no words before a handshake).
                if !transport.isTLS {
                    sendNow(transport, Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
                }
                close(fd)
                continue
            }
            var nodelay: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &nodelay, socklen_t(MemoryLayout<Int32>.size))
            // A TLS handshake must be done within the head deadline too; it counts from the accept.
            slots[fd] = HTTPConnectionSlot(phase: .awaitingHead, transport: transport, stamp: 0, deadline: 0)
            enter(fd, .awaitingHead, deadline: monotonicNanoseconds() + headTimeout)
            _ = tcptop_epoll_add(server.epollFD, fd, UInt32(TCPTOP_EPOLLIN))
        }
    }

    private func pauseAccepting(because code: Int32) {
        guard acceptPausedUntil == nil else { return }
        server.logger.warning("accept: \(String(cString: strerror(code))); pausing 100 ms")
        for fd in listeners { _ = tcptop_epoll_modify(server.epollFD, fd, 0) }
        acceptPausedUntil = monotonicNanoseconds() + 100_000_000
    }

    private func resumeAccepting() {
        for fd in listeners { _ = tcptop_epoll_modify(server.epollFD, fd, UInt32(TCPTOP_EPOLLIN)) }
        acceptPausedUntil = nil
    }

    /// Closes the connection that can best be spared: one lingering after its
    /// answer, else the oldest idle kept-alive one, else the oldest still
    /// sending its head. Never one being answered. False when there is none.
    private func evictOne() -> Bool {
        for queue in [\HTTPEventLoop.lingering, \.idle, \.awaitingHead] {
            if let fd = self[keyPath: queue].front(in: slots) {
                self[keyPath: queue].removeFront()
                closeConnection(fd)
                return true
            }
        }
        return false
    }

    // MARK: reading

    private func readable(_ fd: Int32) {
        guard let slot = slots[fd], slot.phase != .busy else { return }
        if slot.phase == .lingering {
            // Raw bytes, TLS or not: only their count matters.
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return }
            guard count > 0 else { return closeConnection(fd) }  // end of stream, or reset
            slots[fd]!.discarded += count
            if slots[fd]!.discarded > Self.lingerLimit { closeConnection(fd) }
            return
        }
        if case .tls(let session) = slot.transport, !session.handshakeDone {
            guard handshake(fd, session) else { return }
        }
        // One read, as epoll is level-triggered; TLS reads on while OpenSSL
        // holds bytes epoll cannot see (the rest of a record, say).
        var received = false
        reading: while true {
            switch scratch.withUnsafeMutableBytes({ slot.transport.receive(into: $0) }) {
            case .transferred(let count):
                slots[fd]!.buffer.append(contentsOf: scratch[..<count])
                received = true
                waitFor(fd, write: false)
                if !slot.transport.hasPendingBytes { break reading }
            case .wantRead:
                waitFor(fd, write: false)
                if received { break reading } else { return }
            case .wantWrite:
                waitFor(fd, write: true)
                if received { break reading } else { return }
            case .closed, .error, .failed: return closeConnection(fd)  // end of stream, reset, or a TLS failure
            }
            // A flood of records must not starve the other connections: the head limit ends it.
            if slots[fd]!.buffer.count > configuration.maxHeadSize + configuration.maxDiscardedBodySize { break }
        }
        switch slot.phase {
        case .lingering, .busy: break
        case .idle, .awaitingHead:
            if !slot.received {
                // The head deadline counts from the first byte of the request, and never restarts.
                enter(fd, .awaitingHead, deadline: monotonicNanoseconds() + headTimeout)
                slots[fd]!.received = true
            }
            process(fd)
        }
    }

    /// One step of a TLS handshake; true once it is done. A client that
    /// spoke plain HTTP is told so in plain HTTP (as Go's server does).
    private func handshake(_ fd: Int32, _ session: TLSSession) -> Bool {
        switch session.handshake() {
        case .transferred: return true
        case .wantRead: waitFor(fd, write: false)
        case .wantWrite: waitFor(fd, write: true)
        case .closed, .error: closeConnection(fd)
        case .failed:
            // OpenSSL wrote its alert (a refused certificate, no common
            // version); lingering, not closing, lets the client read it
            // rather than a reset.
            if session.peerSentPlainHTTP {
                let text = "Client sent an HTTP request to an HTTPS server.\n"
                sendNow(.plain(fd), Array(("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    + "Content-Length: \(text.utf8.count)\r\nConnection: close\r\n\r\n" + text).utf8))
            }
            waitFor(fd, write: false)  // lingering reads
            shutdown(fd, Int32(SHUT_WR))
            enter(fd, .lingering, deadline: monotonicNanoseconds() + Self.lingerTime)
        }
        return false
    }

    /// The epoll interest of a connection the loop reads: readable, or
    /// writable while a TLS step waits to write.
    private func waitFor(_ fd: Int32, write: Bool) {
        guard slots[fd] != nil, slots[fd]!.wantsWrite != write else { return }
        slots[fd]!.wantsWrite = write
        _ = tcptop_epoll_modify(server.epollFD, fd, UInt32(write ? TCPTOP_EPOLLOUT : TCPTOP_EPOLLIN))
    }

    /// Parses what `fd` sent: answers a bad head, waits for more of an
    /// incomplete one, or hands a complete request to a worker.
    private func process(_ fd: Int32) {
        let parsed: HTTPRequestParser.Result
        do {
            parsed = try HTTPRequestParser.parse(slots[fd]!.buffer[...], maxHeadSize: configuration.maxHeadSize)
        } catch {
            return answer(fd, .text(error.status, "\(error.description)\n"), to: nil)
        }
        guard case .complete(let request, let headLength) = parsed else { return }
        guard request.contentLength <= configuration.maxDiscardedBodySize else {
            return answer(fd, .text(413, "Request bodies are not accepted.\n"), to: request)
        }
        // A small body is read and dropped, so the connection stays in step.
        let length = headLength + request.contentLength
        guard slots[fd]!.buffer.count >= length else { return }
        slots[fd]!.buffer.removeFirst(length)
        if slots[fd]!.buffer.isEmpty { slots[fd]!.buffer = [] }  // an idle connection holds no buffer

        if cutAt != nil {
            return answer(fd, .text(503, "The server is stopping.\n"), to: request)
        }
        guard activeRequests < configuration.maxConcurrentRequests else {
            return answer(fd, .text(503, "Too many concurrent requests, try again later.\n"), to: request)
        }
        enter(fd, .busy, deadline: 0)
        _ = tcptop_epoll_remove(server.epollFD, fd)  // the worker has it until it hands it back
        activeRequests += 1
        if activeRequests > workers { startWorker() }
        slots[fd]!.wantsWrite = false  // added back for reading when handed back
        server.jobs.submit(HTTPJob(fd: fd, stamp: slots[fd]!.stamp, request: request, transport: slots[fd]!.transport))
    }

    /// The loop's own short answers: sent without waiting, then the connection lingers.
    private func answer(_ fd: Int32, _ response: HTTPResponse, to request: HTTPRequest?) {
        let (head, body) = HTTPResponseEncoder(gzipLevel: configuration.gzipLevel).encode(response, for: request, keepAlive: false)
        sendNow(slots[fd]!.transport, head + body)
        startLingering(fd)
    }

    /// Half-close, then read and drop what the peer still sends for a
    /// moment: closing with unread input makes the kernel send RST, which
    /// can destroy the response before the client reads it.
    private func startLingering(_ fd: Int32, halfClosed: Bool = false) {
        if !halfClosed { slots[fd]!.transport.finishSending() }
        slots[fd]!.buffer = []
        enter(fd, .lingering, deadline: monotonicNanoseconds() + Self.lingerTime)
    }

    // MARK: workers

    private func startWorker() {
        let (server, handler) = (self.server, self.handler)
        let started = startHTTPThread {
            while let job = server.jobs.next() {
                let request = job.request
                let response = handler(request)
                let keepAlive = request.wantsKeepAlive && !server.isStopping
                let outcome = HTTPResponder(transport: job.transport, configuration: server.configuration, logger: server.logger)
                    .respond(response, to: request, keepAlive: keepAlive)
                server.finished(HTTPFinished(fd: job.fd, stamp: job.stamp, outcome: outcome))
            }
        }
        if started {
            workers += 1
        } else if workers == 0 {
            // Nobody to take the job: it is answered when a thread can be had (never, at worst: the client times out).
            server.logger.error("cannot start an HTTP worker thread")
        }
    }

    private func takeFinished() {
        for finished in server.takeFinished() {
            guard slots[finished.fd]?.stamp == finished.stamp else { continue }
            activeRequests -= 1
            let fd = finished.fd
            switch finished.outcome {
            case .abort:
                abortConnection(fd)
                slots[fd] = nil
            case .linger:
                _ = tcptop_epoll_add(server.epollFD, fd, UInt32(TCPTOP_EPOLLIN))
                startLingering(fd, halfClosed: true)
            case .keepAlive where cutAt != nil:
                close(fd)
                slots[fd] = nil
            case .keepAlive:
                _ = tcptop_epoll_add(server.epollFD, fd, UInt32(TCPTOP_EPOLLIN))
                if slots[fd]!.buffer.isEmpty {
                    slots[fd]!.received = false
                    enter(fd, .idle, deadline: monotonicNanoseconds() + idleTimeout)
                } else {
                    // A pipelined request is here already.
                    enter(fd, .awaitingHead, deadline: monotonicNanoseconds() + headTimeout)
                    slots[fd]!.received = true
                    process(fd)
                }
            }
        }
    }

    // MARK: deadlines

    private func enter(_ fd: Int32, _ phase: HTTPConnectionSlot.Phase, deadline: UInt64) {
        nextStamp += 1
        slots[fd]!.phase = phase
        slots[fd]!.stamp = nextStamp
        slots[fd]!.deadline = deadline
        switch phase {
        case .awaitingHead: awaitingHead.append(fd, nextStamp)
        case .idle: idle.append(fd, nextStamp)
        case .lingering: lingering.append(fd, nextStamp)
        case .busy: break  // the worker keeps the write deadline
        }
    }

    private func expireDeadlines(_ now: UInt64) {
        while let fd = awaitingHead.front(in: slots), slots[fd]!.deadline <= now {
            awaitingHead.removeFront()
            if slots[fd]!.received {
                // Slow or stalled clients lose their connection; others never waited on them.
                answer(fd, .text(408, "Request head not received in time.\n"), to: nil)
            } else {
                closeConnection(fd)  // never said a word: nothing to answer
            }
        }
        for queue in [\HTTPEventLoop.idle, \.lingering] {
            while let fd = self[keyPath: queue].front(in: slots), slots[fd]!.deadline <= now {
                self[keyPath: queue].removeFront()
                closeConnection(fd)
            }
        }
    }

    /// Until the nearest deadline; -1 (no limit) when there is none.
    private func waitMilliseconds() -> Int32 {
        var nearest = [acceptPausedUntil, cutAt, giveUpAt].compactMap { $0 }.min()
        for queue in [\HTTPEventLoop.awaitingHead, \.idle, \.lingering] {
            if let fd = self[keyPath: queue].front(in: slots) {
                nearest = min(nearest ?? .max, slots[fd]!.deadline)
            }
        }
        guard let nearest else { return -1 }
        let now = monotonicNanoseconds()
        return nearest <= now ? 0 : Int32(min(86_400_000, (nearest - now + 999_999) / 1_000_000))
    }

    private func closeConnection(_ fd: Int32) {
        close(fd)  // also takes it out of the epoll set
        slots[fd] = nil
    }

    // MARK: stopping

    /// Stop accepting, close the listeners, and close every connection not
    /// being answered; answers in flight get the grace period.
    private func beginStop(_ now: UInt64) {
        for fd in listeners { _ = tcptop_epoll_remove(server.epollFD, fd) }
        server.closeListeners()
        for (fd, slot) in slots where slot.phase == .awaitingHead || slot.phase == .idle { closeConnection(fd) }
        cutAt = now + server.gracePeriod.nanoseconds
        acceptPausedUntil = nil
    }

    /// True once the loop can end: no connection left, or the time is up.
    private func stopStep(_ now: UInt64) -> Bool {
        if slots.isEmpty { return true }
        if let cutAt, now >= cutAt, giveUpAt == nil {
            // Past the grace period: writes in flight fail at once, and the workers hand back their connections.
            for (fd, slot) in slots {
                if slot.phase == .busy { shutdown(fd, Int32(SHUT_RDWR)) } else { closeConnection(fd) }
            }
            giveUpAt = now + 1_000_000_000
        }
        if let giveUpAt, now >= giveUpAt { return true }
        return false
    }

    private func end() {
        for finished in server.loopEnded() where slots[finished.fd]?.stamp == finished.stamp {
            if case .abort = finished.outcome { abortConnection(finished.fd) } else { close(finished.fd) }
            slots[finished.fd] = nil
        }
        // What is left is held by workers stuck in a handler; they close it when done.
        for (fd, slot) in slots where slot.phase != .busy { close(fd) }
        slots = [:]
        server.openConnections.store(0, ordering: .relaxed)
        _ = tcptop_epoll_remove(server.epollFD, server.wakeFD)
        server.jobs.close(workers: workers)
    }
}
