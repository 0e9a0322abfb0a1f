import Glibc
import Logging
import Synchronization

/// A small HTTP/1.1 server on POSIX sockets: `init` binds, `start` serves,
/// `stop` ends. Binding is separate so a daemon can bind every address,
/// report readiness, and only then serve.
///
/// Concurrency: one thread per listener blocks in poll()+accept(), and one
/// thread per connection runs blocking-style I/O with poll() deadlines. The
/// handler is synchronous and may take a while (a scrape reads the kernel's
/// maps); with a thread per connection a slow handler or a slow client only
/// ever holds its own thread. Exporters see a handful of connections, and
/// `maxConnections` bounds the threads, so the simplicity is affordable.
public final class HTTPServer: Sendable {
    public struct Configuration: Sendable {
        /// Time to receive a whole request head (and a small body) once it starts.
        public var headReadTimeout: Duration = .seconds(10)
        /// Time a kept-alive connection may wait for its next request.
        public var idleTimeout: Duration = .seconds(60)
        /// Time to write one response.
        public var writeTimeout: Duration = .seconds(30)
        /// Handler calls running at once; past it, 503 (like `--web.max-requests`).
        public var maxConcurrentRequests = 40
        /// Open connections (threads); past it, a best-effort 503 and close.
        public var maxConnections = 128
        public var maxHeadSize = HTTPRequestParser.defaultMaxHeadSize
        /// Bodies up to this size are read and dropped; larger ones get 413.
        public var maxDiscardedBodySize = 64 * 1024
        /// 1: the cheapest level for the host being monitored; metric text still shrinks about tenfold.
        public var gzipLevel: Int32 = 1
        public var listenBacklog: Int32 = 128

        public init() {}
    }

    /// The addresses actually bound, with real ports (useful with port 0).
    public let boundAddresses: [ListenAddress]
    private let configuration: Configuration
    private let logger: Logger
    private let listenerFDs: [Int32]
    /// The listeners of each address asked for, to hand to a successor.
    private let listenersByAddress: [ListenAddress: [HTTPListener]]
    /// Written once on stop; its read end stays readable and wakes every poll that watches it.
    private let stopPipe: (read: Int32, write: Int32)
    private let state = Mutex(State())

    private struct State {
        var started = false
        var stopping = false
        var listenersClosed = false
        var runningAcceptLoops = 0
        var connections: Set<Int32> = []
        var activeRequests = 0
    }

    /// Binds and listens on every address; throws the first failure as one line,
    /// e.g. `listen 127.0.0.1:9435: Address already in use`, after closing the rest.
    /// With `predecessor` (a reload), an address it listens on already is
    /// not bound again: its sockets are shared (dup), so that address never
    /// stops accepting, and the predecessor, still serving, is untouched if
    /// another address fails.
    public init(listenAddresses: [ListenAddress], configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "tcptop.http"), predecessor: HTTPServer? = nil) throws(HTTPBindError) {
        var listeners: [HTTPListener] = []
        var byAddress: [ListenAddress: [HTTPListener]] = [:]
        do {
            for address in listenAddresses where byAddress[address] == nil {
                let bound: [HTTPListener]
                if let shared = try predecessor?.sharedListeners(for: address) {
                    bound = shared
                } else {
                    bound = try HTTPListener.bind(address, backlog: configuration.listenBacklog)
                }
                byAddress[address] = bound
                listeners += bound
            }
        } catch {
            for listener in listeners { close(listener.fd) }
            throw error
        }
        // A socket pair, not pipe2(), which Swift's Glibc module does not export.
        var pipeFDs: [Int32] = [-1, -1]
        let pairType = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        guard socketpair(AF_UNIX, pairType, 0, &pipeFDs) == 0 else {
            let reason = String(cString: strerror(errno))
            for listener in listeners { close(listener.fd) }
            throw HTTPBindError(address: "(stop pipe)", reason: reason)
        }
        self.boundAddresses = listeners.map(\.address)
        self.listenerFDs = listeners.map(\.fd)
        self.listenersByAddress = byAddress
        self.stopPipe = (pipeFDs[0], pipeFDs[1])
        self.configuration = configuration
        self.logger = logger
    }

    deinit {
        closeListeners()
        close(stopPipe.read)
        close(stopPipe.write)
    }

    /// Starts serving on background threads and returns at once. Call once.
    public func start(handler: @escaping HTTPHandler) {
        let (alreadyStarted, loops) = state.withLock { state -> (Bool, Int) in
            defer { state.started = true }
            if state.started || state.stopping { return (true, 0) }
            state.runningAcceptLoops = listenerFDs.count
            return (false, listenerFDs.count)
        }
        guard !alreadyStarted else { return }
        for index in 0..<loops {
            let listenerFD = listenerFDs[index]
            if !startHTTPThread({ self.acceptLoop(listenerFD: listenerFD, handler: handler) }) {
                logger.error("cannot start a thread to listen on \(boundAddresses[index])")
                state.withLock { $0.runningAcceptLoops -= 1 }
            }
        }
    }

    /// Stops accepting, closes the listeners, lets requests in flight finish
    /// for up to `gracePeriod`, then cuts the connections that remain.
    /// Returns when all is closed (or shortly after the grace period).
    public func stop(gracePeriod: Duration = .seconds(5)) {
        let first = state.withLock { state in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        var byte: UInt8 = 1
        _ = write(stopPipe.write, &byte, 1)

        let deadline = ContinuousClock.now + gracePeriod
        waitUntil(deadline) { $0.runningAcceptLoops == 0 }
        closeListeners()
        waitUntil(deadline) { $0.connections.isEmpty }
        // shutdown() under the lock: a connection closes its fd under the same
        // lock, so this never touches a reused descriptor.
        state.withLock { state in
            for fd in state.connections { shutdown(fd, Int32(SHUT_RDWR)) }
        }
        waitUntil(.now + .seconds(1)) { $0.connections.isEmpty }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }

    /// Runs `body` unless `maxConcurrentRequests` are already running (then nil).
    func admit(_ body: () -> HTTPResponse) -> HTTPResponse? {
        let admitted = state.withLock { state in
            guard state.activeRequests < configuration.maxConcurrentRequests else { return false }
            state.activeRequests += 1
            return true
        }
        guard admitted else { return nil }
        defer { state.withLock { $0.activeRequests -= 1 } }
        return body()
    }

    // MARK: accepting

    private func acceptLoop(listenerFD: Int32, handler: @escaping HTTPHandler) {
        defer { state.withLock { $0.runningAcceptLoops -= 1 } }
        var fds = [pollfd(fd: listenerFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
        while true {
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                logger.error("poll on listener: \(String(cString: strerror(errno)))")
                return
            }
            if fds[1].revents != 0 { return }
            let fd = accept(listenerFD, nil, nil)
            guard fd >= 0 else {
                handleAcceptError(errno)
                continue
            }
            // accept4() is not exported to Swift; set the flags right after.
            // The daemon never forks, so the gap cannot leak the descriptor.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let admitted = state.withLock { state in
                guard state.connections.count < configuration.maxConnections, !state.stopping else { return false }
                state.connections.insert(fd)
                return true
            }
            guard admitted else {
                rejectBusy(fd)
                continue
            }
            let started = startHTTPThread {
                let socket = HTTPSocket(fd: fd, stopFD: self.stopPipe.read)
                HTTPConnection(socket: socket, configuration: self.configuration, server: self, handler: handler).run()
                self.closeConnection(fd)
            }
            if !started {
                logger.warning("cannot start a connection thread; dropping the connection")
                closeConnection(fd)
            }
        }
    }

    private func handleAcceptError(_ code: Int32) {
        switch code {
        case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO:
            return  // The client left before we took it, or nothing to take.
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            // Out of descriptors or memory: pause instead of spinning on poll.
            logger.warning("accept: \(String(cString: strerror(code))); pausing 100 ms")
            usleep(100_000)
        default:
            logger.error("accept: \(String(cString: strerror(code)))")
            usleep(10_000)
        }
    }

    /// Past `maxConnections` there is no thread to spare: answer 503 with one
    /// non-blocking send and close. Best effort; the client may see a reset.
    private func rejectBusy(_ fd: Int32) {
        let response = Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        _ = response.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        shutdown(fd, Int32(SHUT_WR))
        close(fd)
    }

    private func closeConnection(_ fd: Int32) {
        state.withLock { state in
            state.connections.remove(fd)
            close(fd)
        }
    }

    /// Copies (dup) of the sockets listening for `address`, or nil when it
    /// has none or they are closed already.
    private func sharedListeners(for address: ListenAddress) throws(HTTPBindError) -> [HTTPListener]? {
        guard let listeners = listenersByAddress[address] else { return nil }
        return try state.withLock { state throws(HTTPBindError) -> [HTTPListener]? in
            if state.listenersClosed { return nil }
            var copies: [HTTPListener] = []
            for listener in listeners {
                let copy = fcntl(listener.fd, F_DUPFD_CLOEXEC, 0)
                guard copy >= 0 else {
                    let reason = "dup: " + String(cString: strerror(errno))
                    for made in copies { close(made.fd) }
                    throw HTTPBindError(address: listener.address.description, reason: reason)
                }
                copies.append(HTTPListener(fd: copy, address: listener.address))
            }
            return copies
        }
    }

    private func closeListeners() {
        let shouldClose = state.withLock { state in
            defer { state.listenersClosed = true }
            return !state.listenersClosed
        }
        if shouldClose { listenerFDs.forEach { _ = close($0) } }
    }

    private func waitUntil(_ deadline: ContinuousClock.Instant, _ condition: (State) -> Bool) {
        while !state.withLock({ condition($0) }), ContinuousClock.now < deadline {
            usleep(5_000)
        }
    }
}
