import CTCPTop
import Glibc
import Logging
import Synchronization

/// A small HTTP/1.1 server on POSIX sockets: `init` binds, `start` serves,
/// `stop` ends. Binding is separate so a daemon can bind every address,
/// report readiness, and only then serve.
///
/// Concurrency: one event-loop thread (epoll, non-blocking sockets) accepts
/// on every listener, reads and parses request heads, and keeps the time
/// limits, for all connections: an idle or slow client costs a small record,
/// not a thread. A complete request goes to one of `maxConcurrentRequests`
/// worker threads, which runs the handler (it is synchronous and may take a
/// while: a scrape reads the kernel's maps) and writes the whole response,
/// then hands the connection back to the loop. The limit therefore covers
/// the whole response, gzip and write included.
public final class HTTPServer: Sendable {
    public struct Configuration: Sendable {
        /// Time to receive a whole request head (and a small body), from its
        /// first byte; a new connection that sends nothing is closed after it too.
        public var headReadTimeout: Duration = .seconds(10)
        /// Time a kept-alive connection may wait for its next request.
        public var idleTimeout: Duration = .seconds(60)
        /// Time to write one response.
        public var writeTimeout: Duration = .seconds(30)
        /// Responses being produced and written at once; past it, 503 (like `--web.max-requests`).
        public var maxConcurrentRequests = 40
        /// Open connections. At the limit a new one first makes room: the
        /// oldest idle kept-alive connection is closed, else the oldest that
        /// has not sent a whole request head; if every one is being answered,
        /// the newcomer gets a best-effort 503. Each takes a descriptor: the
        /// process's RLIMIT_NOFILE must allow for it.
        public var maxConnections = 16384
        public var maxHeadSize = HTTPRequestParser.defaultMaxHeadSize
        /// Bodies up to this size are read and dropped; larger ones get 413.
        public var maxDiscardedBodySize = 64 * 1024
        /// 1: the cheapest level for the host being monitored; metric text still shrinks about tenfold.
        public var gzipLevel: Int32 = 1
        /// The kernel caps it at net.core.somaxconn (4096 by default).
        public var listenBacklog: Int32 = 4096
        /// Asked at every accept: plain HTTP, or TLS with the context in force
        /// now (so a rotated certificate is served from the next connection).
        public var security: @Sendable () -> Security = { .plain }

        public init() {}
    }

    /// How a new connection is spoken to.
    public enum Security: Sendable {
        case plain
        case tls(TLSServerContext)
        /// TLS is asked for but no certificate ever loaded: the connection is closed, never served in clear.
        case refuse
    }

    /// The addresses actually bound, with real ports (useful with port 0).
    public let boundAddresses: [ListenAddress]
    let configuration: Configuration
    let logger: Logger
    let listenerFDs: [Int32]
    /// The listeners of each address asked for, to hand to a successor.
    private let listenersByAddress: [ListenAddress: [HTTPListener]]
    let epollFD: Int32
    /// An eventfd: written to wake the loop (a connection handed back, stop).
    let wakeFD: Int32
    let jobs = HTTPJobQueue()
    /// Open connections, as the loop last counted them (for tests and status).
    public var connectionCount: Int { openConnections.load(ordering: .relaxed) }
    let openConnections = Atomic<Int>(0)
    /// Requests handed to workers and not yet handed back, likewise.
    var requestsInFlight: Int { requestsBeingAnswered.load(ordering: .relaxed) }
    let requestsBeingAnswered = Atomic<Int>(0)
    private let state = Locked(State())

    private struct State {
        var started = false
        var stopping = false
        var gracePeriod: Duration = .zero
        var listenersClosed = false
        /// The loop thread runs; once false, workers close connections themselves.
        var loopRunning = false
        var finished: [HTTPFinished] = []
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
        let epollFD = tcptop_epoll_create()
        let wakeFD = epollFD >= 0 ? tcptop_eventfd() : -1
        guard epollFD >= 0, wakeFD >= 0 else {
            let reason = String(cString: strerror(errno))
            if epollFD >= 0 { close(epollFD) }
            for listener in listeners { close(listener.fd) }
            throw HTTPBindError(address: "(event loop)", reason: reason)
        }
        self.boundAddresses = listeners.map(\.address)
        self.listenerFDs = listeners.map(\.fd)
        self.listenersByAddress = byAddress
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        self.configuration = configuration
        self.logger = logger
    }

    deinit {
        closeListeners()
        close(epollFD)
        close(wakeFD)
    }

    /// Starts serving on background threads and returns at once. Call once.
    public func start(handler: @escaping HTTPHandler) {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            if state.started || state.stopping { return false }
            state.loopRunning = true
            return true
        }
        guard first else { return }
        let started = startHTTPThread { HTTPEventLoop(server: self, handler: handler).run() }
        if !started {
            logger.error("cannot start the HTTP event loop thread; not serving")
            state.withLock { $0.loopRunning = false }
        }
    }

    /// Stops accepting, closes the listeners, lets responses in flight finish
    /// for up to `gracePeriod`, then cuts the connections that remain.
    /// Returns when all is closed (or shortly after the grace period).
    public func stop(gracePeriod: Duration = .seconds(5)) {
        let (first, running) = state.withLock { state in
            defer { state.stopping = true }
            state.gracePeriod = gracePeriod
            return (!state.stopping, state.loopRunning)
        }
        guard first else { return }
        if running {
            wake()
            let deadline = ContinuousClock.now + gracePeriod + .seconds(2)
            while state.withLock({ $0.loopRunning }), ContinuousClock.now < deadline {
                usleep(2_000)
            }
        }
        closeListeners()
    }

    var isStopping: Bool { state.withLock { $0.stopping } }
    var gracePeriod: Duration { state.withLock { $0.gracePeriod } }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// A worker hands a connection back. Once the loop is gone the worker
    /// closes it itself (the loop never closes a connection a worker holds).
    func finished(_ connection: HTTPFinished) {
        let queued = state.withLock { state in
            if state.loopRunning { state.finished.append(connection) }
            return state.loopRunning
        }
        if queued {
            wake()
        } else if case .abort = connection.outcome {
            abortConnection(connection.fd)
        } else {
            close(connection.fd)
        }
    }

    /// For the loop: the connections handed back since the last call.
    func takeFinished() -> [HTTPFinished] {
        state.withLock { state in
            defer { state.finished = [] }
            return state.finished
        }
    }

    /// For the loop, as it ends: from now on workers close their connections;
    /// returns those handed back meanwhile.
    func loopEnded() -> [HTTPFinished] {
        state.withLock { state in
            state.loopRunning = false
            defer { state.finished = [] }
            return state.finished
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

    func closeListeners() {
        let shouldClose = state.withLock { state in
            defer { state.listenersClosed = true }
            return !state.listenersClosed
        }
        if shouldClose { listenerFDs.forEach { _ = close($0) } }
    }
}
