import TCPTopHTTP
import Dispatch
import Foundation
import Logging
import TCPTopBPF
import TCPTopCore

/// The exporter's life: load config → load and attach BPF → bind every
/// listen address → READY=1 → serve, poll, ping the watchdog → on SIGTERM
/// or SIGINT, STOPPING=1, stop serving, detach, exit 0. SIGHUP reloads.
public final class Daemon: Sendable {
    /// What the command line says; flags override the config file.
    public struct Options: Sendable {
        public var configPath: String?
        public var listenAddresses: [ListenAddress] = []
        public var telemetryPath: String?
        public var logLevel: LogLevel?
        public var logFormat: LogFormat?
        public var attachMode: BPFAttachMode?
        public var readPath: BPFReadPath?
        /// `--web.config.file`; "" is none.
        public var webConfigFile: String?
        public init() {}
    }

    private let options: Options
    private let notifier = SystemdNotifier()
    private let logSettings: LogSettings
    private let log: Logger
    /// Serial: timers, signals and reloads run here, one at a time.
    private let queue = DispatchQueue(label: "tcptop.daemon")
    /// The watchdog's own queue: a poll or a reload on `queue` never delays a
    /// ping, and a ping never waits for either (it asks a clock, not a lock).
    private let watchdogQueue = DispatchQueue(label: "tcptop.watchdog")
    private let stopped = DispatchSemaphore(value: 0)
    /// What a reload changes while HTTP threads, timers and `run()` read it.
    /// Written only on `queue` (and by `run()` before the first timer or
    /// signal source exists); read anywhere, under the lock.
    private let state: Locked<State>
    /// Read by every request; replaced by a reload of the telemetry path.
    private let router = Locked(HTTPRouter())
    /// The web config file in force (nil: none); replaced when a reload names another.
    private let webConfig: Locked<WebConfigWatcher?>
    /// Outlives web config changes: its keys include the stored hash.
    private let authenticator = BasicAuthenticator()
    /// The TLS context of each new connection, rebuilt when the certificate,
    /// key or client CA changes on disk (or the web config's TLS settings).
    private let tlsContexts: TLSServerContextSource

    // Unchecked only for the dispatch sources: thread-safe objects that
    // swift-corelibs-libdispatch does not mark Sendable.
    private struct State: @unchecked Sendable {
        var config: ExporterConfig
        var collector: MetricsCollector?
        var server: HTTPServer?
        var timers: [any DispatchSourceTimer] = []
        var signalSources: [any DispatchSourceSignal] = []
        var stopping = false
    }

    /// Loads and checks the configuration; throws one line on a bad one.
    public init(options: Options) throws {
        self.options = options
        let config = try Self.loadConfig(options)
        state = Locked(State(config: config))
        logSettings = LogSettings(level: config.log.level, format: config.log.format)
        let settings = logSettings
        let log = Logger(label: "tcptop-exporter", factory: { _ in LineLogHandler(settings: settings) })
        self.log = log
        tlsContexts = TLSServerContextSource { problem in
            if let problem {
                log.error("TLS: \(problem); new connections keep the previous certificate")
            } else {
                log.info("TLS certificate reloaded")
            }
        }
        webConfig = Locked(try config.web.configFile.map { try Self.watchWebConfig(path: $0, log: log) })
    }

    /// Follows the web config file at `path`; a bad one throws one line.
    private static func watchWebConfig(path: String, log: Logger) throws -> WebConfigWatcher {
        let tlsAtStart = Locked<Bool?>(nil)
        return try WebConfigWatcher(path: path, accept: { file in try checkTLS(file, tlsAtStart: tlsAtStart) }) { event in
            switch event {
            case .loaded(let file):
                let settings = file.settings
                // Never the hashes: the count of users is enough to tell what runs.
                log.info("web config loaded", metadata: [
                    "file": "\(path)", "tls": "\(settings.tls.map { "\($0.minVersion.rawValue)-\($0.maxVersion.rawValue) \($0.clientAuth.rawValue)" } ?? "off")",
                    "basic_auth_users": "\(settings.basicAuthUsers.count)",
                    "headers": "\(settings.headers.map(\.name).joined(separator: ","))",
                ])
                for note in file.notes { log.warning("\(note)") }
            case .kept(let problem):
                log.error("\(problem); keeping the previous web config")
            }
        }
    }

    /// The certificate, key and client CA must load (at start: exit 2 with
    /// the line). As with exporter-toolkit, an edit of the file cannot turn
    /// TLS on or off while running: that would serve in clear what was
    /// asked to be encrypted, or the reverse; a restart (or a reload that
    /// names another file) can.
    private static func checkTLS(_ file: WebConfigFile, tlsAtStart: Locked<Bool?>) throws {
        let wanted = file.settings.tls != nil
        let first = tlsAtStart.withLock { state in
            defer { if state == nil { state = wanted } }
            return state
        }
        if let first, first != wanted {
            throw ConfigError(key: "tls_server_config", problem: "TLS cannot be turned \(wanted ? "on" : "off") while running; restart tcptop-exporter",
                              source: "web config")
        }
        guard let tls = file.settings.tls else { return }
        do {
            _ = try TLSServerContext(tls)
        } catch {
            throw ConfigError(key: "tls_server_config", problem: "\(error)", source: "web config")
        }
    }

    static func loadConfig(_ options: Options) throws -> ExporterConfig {
        var config = try ExporterConfig.load(path: options.configPath)
        if !options.listenAddresses.isEmpty { config.web.listenAddresses = options.listenAddresses }
        if let path = options.telemetryPath {
            guard path.hasPrefix("/"), path != "/" else {
                throw ConfigError(key: "--web.telemetry-path", problem: "must start with \"/\" and not be \"/\", got \"\(path)\"")
            }
            config.web.telemetryPath = path
        }
        if let level = options.logLevel { config.log.level = level }
        if let format = options.logFormat { config.log.format = format }
        if let mode = options.attachMode { config.bpf.attachMode = mode }
        if let path = options.readPath { config.bpf.readPath = path }
        if let path = options.webConfigFile { config.web.configFile = path.isEmpty ? nil : path }
        return config
    }

    /// Runs until SIGTERM/SIGINT; returns the exit code.
    public func run() -> Int32 {
        let config = state.withLock { $0.config }
        log.info("starting", metadata: ["version": "\(tcptopVersion)", "kernel": "\(kernelRelease())"])
        raiseOpenFileLimit(toHold: config.web.maxConnections)
        notifier.status("Loading BPF programs")
        let tracer: TCPTracer
        do {
            let logger = log
            tracer = try TCPTracer.start(.init(mapCapacity: UInt32(config.bpf.mapCapacity), attachMode: config.bpf.attachMode,
                                               readPath: config.bpf.readPath),
                                         log: { logger.debug("\($0)") })
        } catch {
            log.error("\(error)")
            return 1
        }
        log.info("BPF programs attached", metadata: [
            "mode": "\(tracer.attachMode)", "read_path": "\(tracer.readPath)", "map_capacity": "\(tracer.mapCapacity)", "reason": "\(tracer.attachReason)",
        ])
        // A family the kernel cannot feed is absent, never zeros that look like health.
        for gap in tracer.healthGaps { log.warning("\(gap)") }
        // A cgroup gone before the first read after its first byte (a short job) is named by what the kernel side noted.
        let names = AttributionNames(kernelNames: { [tracer] id in tracer.cgroupName(id: id) })
        let collector = MetricsCollector(
            tracer: tracer, registry: ConnectionRegistry(config: config, health: tracer.healthFamilies, names: names), version: tcptopVersion)

        notifier.status("Binding \(config.web.listenAddresses.map(\.description).joined(separator: ", "))")
        let server: HTTPServer
        do {
            server = try Self.bindServer(config.web, log: log, security: security)
        } catch {
            log.error("\(Self.explained(error))")
            return 1
        }
        // Before any other thread starts (capabilities are per thread): the
        // threads started from here on inherit what is left.
        do {
            let outcome = try LeastPrivilege.dropAfterAttach(check: tracer.checkReadAccess)
            var metadata: Logger.Metadata = [
                "kept": "\(outcome.kept.isEmpty ? "none" : outcome.kept.joined(separator: ","))",
                "dropped": "\(outcome.dropped)", "bounding_set": "\(outcome.boundingNarrowed ? "narrowed" : "unchanged")",
                "threads": "\(outcome.threads)",
            ]
            if let refusal = outcome.refusedWithout { metadata["refused_without"] = "\(refusal)" }
            log.info("capabilities dropped", metadata: metadata)
            if outcome.threads > 1 {
                log.warning("\(outcome.threads - 1) threads started before the capability drop keep what they had")
            }
        } catch {
            log.warning("capabilities kept: \(error)")
        }
        state.withLock { state in
            state.collector = collector
            state.server = server
        }
        setRoutes(telemetryPath: config.web.telemetryPath, collector: collector)
        server.start(handler: handler())
        queue.sync {
            installSignalHandlers()
            startTimers(pollInterval: config.connections.pollInterval.inSeconds, collector: collector)
        }
        let listening = server.boundAddresses.map(\.description).joined(separator: ", ")
        log.info("listening", metadata: ["address": "\(listening)", "telemetry_path": "\(config.web.telemetryPath)"])
        notifier.start()
        notifier.ready(status: statusText())

        stopped.wait()
        notifier.stopping()
        log.info("stopping")
        // On `queue`, so no reload is half done; none starts after this.
        let last = queue.sync {
            state.withLock { state in
                state.stopping = true
                for timer in state.timers { timer.cancel() }
                for source in state.signalSources { source.cancel() }
                defer { (state.timers, state.signalSources, state.server, state.collector) = ([], [], nil, nil) }
                return state.server
            }
        }
        last?.stop()
        router.withLock { $0 = HTTPRouter() }
        // The router held the last reference to the collector and so to the
        // tracer; the tracer's deinit detached the programs just now.
        // STOPPING=1 has been asked for; a reader that is not reading does
        // not hold the exit past a second.
        if !notifier.flush(timeout: 1) { log.warning("sd_notify: STOPPING=1 not read by systemd within 1 s") }
        log.info("stopped; BPF programs detached")
        return 0
    }

    private static func bindServer(_ web: WebConfig, log: Logger, security: @escaping @Sendable () -> HTTPServer.Security,
                                   predecessor: HTTPServer? = nil) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configuration.security = security
        configuration.maxConcurrentRequests = web.maxRequests
        configuration.headReadTimeout = web.readTimeout
        configuration.writeTimeout = web.writeTimeout
        configuration.idleTimeout = web.idleTimeout
        configuration.maxConnections = web.maxConnections
        return try HTTPServer(listenAddresses: web.listenAddresses, configuration: configuration, logger: log, predecessor: predecessor)
    }

    /// EPERM from bind() is not a file permission: under the shipped unit it
    /// is SocketBindAllow= refusing a port other than the one it names.
    private static func explained(_ error: any Error) -> String {
        guard let bind = error as? HTTPBindError, bind.reason == String(cString: strerror(EPERM)) else { return "\(error)" }
        return "\(bind) (a SocketBindAllow= of the service refuses this port?)"
    }

    /// Each connection can hold a descriptor: raise the soft limit toward the
    /// hard one so `web.max_connections` can be reached, and say so when it cannot.
    private func raiseOpenFileLimit(toHold connections: Int) {
        let wanted = rlim_t(connections + 256)  // listeners, BPF maps and programs, the log
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < wanted else { return }
        limit.rlim_cur = min(wanted, limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < wanted {
            log.warning("open files limited to \(limit.rlim_cur) (hard limit): fewer than web.max_connections \(connections) connections can be held; raise LimitNOFILE=")
        }
    }

    /// Asked at every accept: TLS when the web config in force asks for it,
    /// with the context of the certificate on disk now.
    private var security: @Sendable () -> HTTPServer.Security {
        { [webConfig, tlsContexts] in
            guard let tls = webConfig.withLock({ $0 })?.settings.tls else { return .plain }
            return tlsContexts.context(for: tls).map { .tls($0) } ?? .refuse
        }
    }

    /// Every path behind the web config's basic auth and headers (when a file is given).
    private func handler() -> HTTPHandler {
        let routed: HTTPHandler = { [self] request in router.withLock { $0 }.handle(request) }
        return securedHandler(routed, authenticator: authenticator) { [self] in
            webConfig.withLock { $0 }?.settings ?? HTTPSecuritySettings()
        }
    }

    /// A reload re-reads the web config file, or follows the one newly named.
    /// Returns the path in force. Runs on `queue`.
    private func reloadWebConfig(path: String?, previous: String?) -> String? {
        guard path != previous else {
            webConfig.withLock { $0 }?.check(force: true)
            return path
        }
        do {
            let watcher = try path.map { try Self.watchWebConfig(path: $0, log: log) }
            webConfig.withLock { $0 = watcher }
            return path
        } catch {
            log.error("reload: \(error); keeping the previous web config")
            return previous
        }
    }

    private func setRoutes(telemetryPath: String, collector: MetricsCollector) {
        let routes = exporterRouter(telemetryPath: telemetryPath, collector: collector)
        router.withLock { $0 = routes }
    }

    private func statusText() -> String {
        let (config, server, collector) = state.withLock { ($0.config, $0.server, $0.collector) }
        let addresses = server?.boundAddresses.map(\.description).joined(separator: ", ") ?? ""
        return "Serving \(config.web.telemetryPath) on \(addresses); \(collector?.trackedConnections ?? 0) connection ends tracked"
    }

    // MARK: Timers: polling and the watchdog

    /// Runs on `queue`.
    private func startTimers(pollInterval: Double, collector: MetricsCollector) {
        var timers = [repeating(every: pollInterval) { [self] in
            do {
                try collector.poll()
                // Never waits: the notifier keeps only the latest text and
                // sends it when it is new (at most every statusInterval).
                notifier.status(statusText())
            } catch {
                log.warning("reading the kernel maps failed: \(error)")
            }
        }]
        if let watchdog = notifier.watchdogInterval() {
            // Ping only while the kernel maps are being read: a stuck
            // collector stops the pings and systemd restarts the daemon.
            let healthyWithin = max(watchdog, 2 * pollInterval)
            log.info("watchdog enabled", metadata: ["interval_seconds": "\(watchdog)"])
            timers.append(repeating(every: watchdog / 2, on: watchdogQueue) { [notifier] in
                if collector.secondsSinceLastRead <= healthyWithin { notifier.watchdogPing() }
            })
        }
        state.withLock { state in
            for timer in state.timers { timer.cancel() }
            state.timers = timers
        }
    }

    private func repeating(every seconds: Double, on timerQueue: DispatchQueue? = nil,
                           _ work: @escaping @Sendable () -> Void) -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: timerQueue ?? queue)
        timer.schedule(deadline: .now() + seconds, repeating: seconds, leeway: .milliseconds(100))
        timer.setEventHandler(handler: work)
        timer.resume()
        return timer
    }

    // MARK: Signals

    /// Call first in main, before any thread starts: threads inherit the
    /// mask, so SIGTERM, SIGINT and SIGHUP stay pending until the dispatch
    /// sources read them (libdispatch reads signals through a signalfd).
    /// Unblocked, one that arrives before a source is registered, or that is
    /// delivered to a thread which does not block it, is ignored and lost: a
    /// `systemctl reload` just after READY=1 did nothing (measured 16 in 60).
    public static func blockHandledSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, signalNumber) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Runs on `queue`.
    private func installSignalHandlers() {
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            signal(signalNumber, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { [self] in
                if signalNumber == SIGHUP {
                    reload()
                } else {
                    stopped.signal()
                }
            }
            source.resume()
            sources.append(source)
        }
        state.withLock { $0.signalSources = sources }
    }

    /// Re-reads the config file. A bad config is logged and the running one kept.
    /// Runs on `queue`.
    private func reload() {
        guard let (config, server, collector) = state.withLock({ state in
            state.stopping ? nil : state.collector.map { (state.config, state.server, $0) }
        }) else { return }
        notifier.reloading()
        log.info("reloading configuration", metadata: ["file": "\(options.configPath ?? "(none: defaults)")"])
        defer { notifier.ready(status: statusText()) }
        var new: ExporterConfig
        do {
            new = try Self.loadConfig(options)
        } catch {
            log.error("reload failed, keeping the running configuration: \(error)")
            return
        }
        logSettings.set(level: new.log.level, format: new.log.format)
        if new.bpf != config.bpf || new.views != config.views {
            log.warning("bpf and views settings take effect at the next restart")
        }
        // What only a restart can change stays as it runs.
        new.bpf = config.bpf
        new.views = config.views
        if new.connections != config.connections {
            collector.setClosedRetention(seconds: new.connections.closedRetention.inSeconds)
            startTimers(pollInterval: new.connections.pollInterval.inSeconds, collector: collector)
        }
        new.web.configFile = reloadWebConfig(path: new.web.configFile, previous: config.web.configFile)
        var replacement = server
        var bindFailed = false
        var listening = new.web, running = config.web
        (listening.configFile, running.configFile) = (nil, nil)
        if listening != running {
            // The new listeners are bound (an unchanged address shares the
            // running socket) and serving before the old ones stop, so an
            // address that stays never stops accepting; if one cannot be
            // bound, the running listeners were never touched.
            do {
                let bound = try Self.bindServer(new.web, log: log, security: security, predecessor: server)
                bound.start(handler: handler())
                replacement = bound
            } catch {
                log.error("reload: \(Self.explained(error)); the previous listeners keep serving")
                let followed = new.web.configFile  // the web config file is followed apart from the listeners
                new.web = config.web
                new.web.configFile = followed
                bindFailed = true
            }
        }
        state.withLock { state in
            state.config = new
            state.server = replacement
        }
        setRoutes(telemetryPath: new.web.telemetryPath, collector: collector)
        if replacement !== server { server?.stop() }
        if !bindFailed { log.info("configuration reloaded") }
    }
}
