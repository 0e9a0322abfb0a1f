import TCPTopHTTP
import Dispatch
import Foundation
import Logging
import TCPTopBPF
import TCPTopCore

/// The exporter's life: load config → load and attach BPF → bind every
/// listen address → READY=1 → serve, poll, ping the watchdog → on SIGTERM
/// or SIGINT, STOPPING=1, stop serving, detach, exit 0. SIGHUP reloads.
public final class Daemon: @unchecked Sendable {
    /// What the command line says; flags override the config file.
    public struct Options: Sendable {
        public var configPath: String?
        public var listenAddresses: [ListenAddress] = []
        public var telemetryPath: String?
        public var logLevel: LogLevel?
        public var logFormat: LogFormat?
        public var attachMode: BPFAttachMode?
        public var readPath: BPFReadPath?
        public init() {}
    }

    private let options: Options
    private let notifier = SystemdNotifier()
    private let logSettings: LogSettings
    private let log: Logger
    private let queue = DispatchQueue(label: "tcptop.daemon")
    /// The watchdog's own queue: a poll or a reload on `queue` never delays a
    /// ping, and a ping never waits for either (it asks a clock, not a lock).
    private let watchdogQueue = DispatchQueue(label: "tcptop.watchdog")
    private let stopped = DispatchSemaphore(value: 0)
    private var config: ExporterConfig
    private var collector: MetricsCollector!
    private var server: HTTPServer?
    private let routerLock = NSLock()
    private var router = HTTPRouter()
    private var timers: [DispatchSourceTimer] = []
    private var signalSources: [DispatchSourceSignal] = []

    /// Loads and checks the configuration; throws one line on a bad one.
    public init(options: Options) throws {
        self.options = options
        let config = try Self.loadConfig(options)
        self.config = config
        logSettings = LogSettings(level: config.log.level, format: config.log.format)
        let settings = logSettings
        log = Logger(label: "tcptop-exporter", factory: { _ in LineLogHandler(settings: settings) })
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
        return config
    }

    /// Runs until SIGTERM/SIGINT; returns the exit code.
    public func run() -> Int32 {
        log.info("starting", metadata: ["version": "\(tcptopVersion)", "kernel": "\(kernelRelease())"])
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
        collector = MetricsCollector(
            tracer: tracer, registry: ConnectionRegistry(config: config), version: tcptopVersion)

        notifier.status("Binding \(config.web.listenAddresses.map(\.description).joined(separator: ", "))")
        do {
            server = try Self.bindServer(config.web, log: log)
        } catch {
            log.error("\(error)")
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
        installSignalHandlers()
        setRoutes(telemetryPath: config.web.telemetryPath)
        server?.start(handler: handler())
        queue.sync { startTimers(pollInterval: config.connections.pollInterval.inSeconds) }
        let listening = server?.boundAddresses.map(\.description).joined(separator: ", ") ?? ""
        log.info("listening", metadata: ["address": "\(listening)", "telemetry_path": "\(config.web.telemetryPath)"])
        notifier.start()
        notifier.ready(status: statusText())

        stopped.wait()
        notifier.stopping()
        log.info("stopping")
        queue.sync {
            for timer in timers { timer.cancel() }
        }
        server?.stop()
        server = nil
        collector = nil  // the last reference to the tracer: its deinit detaches the programs
        // STOPPING=1 has been asked for; a reader that is not reading does
        // not hold the exit past a second.
        if !notifier.flush(timeout: 1) { log.warning("sd_notify: STOPPING=1 not read by systemd within 1 s") }
        log.info("stopped; BPF programs detached")
        return 0
    }

    private static func bindServer(_ web: WebConfig, log: Logger, predecessor: HTTPServer? = nil) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configuration.maxConcurrentRequests = web.maxRequests
        configuration.headReadTimeout = web.readTimeout
        configuration.writeTimeout = web.writeTimeout
        let addresses = web.listenAddresses
        return try HTTPServer(listenAddresses: addresses, configuration: configuration, logger: log, predecessor: predecessor)
    }

    private func handler() -> HTTPHandler {
        { [self] request in routerLock.withLock { router }.handle(request) }
    }

    private func setRoutes(telemetryPath: String) {
        let router = exporterRouter(telemetryPath: telemetryPath, metrics: { [self] in collector.scrape() })
        routerLock.withLock { self.router = router }
    }

    private func statusText() -> String {
        let addresses = server?.boundAddresses.map(\.description).joined(separator: ", ") ?? ""
        return "Serving \(config.web.telemetryPath) on \(addresses); \(collector.trackedConnections) connection ends tracked"
    }

    // MARK: Timers: polling and the watchdog

    private func startTimers(pollInterval: Double) {
        timers.append(repeating(every: pollInterval) { [self] in
            do {
                try collector.poll()
                // Never waits: the notifier keeps only the latest text and
                // sends it when it is new (at most every statusInterval).
                notifier.status(statusText())
            } catch {
                log.warning("reading the kernel maps failed: \(error)")
            }
        })
        if let watchdog = notifier.watchdogInterval() {
            // Ping only while the kernel maps are being read: a stuck
            // collector stops the pings and systemd restarts the daemon.
            let healthyWithin = max(watchdog, 2 * pollInterval)
            log.info("watchdog enabled", metadata: ["interval_seconds": "\(watchdog)"])
            let collector = collector!
            timers.append(repeating(every: watchdog / 2, on: watchdogQueue) { [notifier] in
                if collector.secondsSinceLastRead <= healthyWithin { notifier.watchdogPing() }
            })
        }
    }

    private func repeating(every seconds: Double, on timerQueue: DispatchQueue? = nil,
                           _ work: @escaping @Sendable () -> Void) -> DispatchSourceTimer {
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

    private func installSignalHandlers() {
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            signal(signalNumber, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { [self] in
                if signalNumber == SIGHUP {
                    reload()
                } else {
                    source.cancel()
                    stopped.signal()
                }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// Re-reads the config file. A bad config is logged and the running one kept.
    /// Runs on `queue`.
    private func reload() {
        notifier.reloading()
        log.info("reloading configuration", metadata: ["file": "\(options.configPath ?? "(none: defaults)")"])
        defer { notifier.ready(status: statusText()) }
        let new: ExporterConfig
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
        if new.connections != config.connections {
            collector.setClosedRetention(seconds: new.connections.closedRetention.inSeconds)
            for timer in timers { timer.cancel() }
            timers = []
            startTimers(pollInterval: new.connections.pollInterval.inSeconds)
        }
        if new.web != config.web {
            // The new listeners are bound (an unchanged address shares the
            // running socket) and serving before the old ones stop, so an
            // address that stays never stops accepting; if one cannot be
            // bound, the running listeners were never touched.
            let previous = server
            do {
                let replacement = try Self.bindServer(new.web, log: log, predecessor: previous)
                replacement.start(handler: handler())
                server = replacement
                previous?.stop()
            } catch {
                log.error("reload: \(error); the previous listeners keep serving")
                var kept = new
                kept.web = config.web
                apply(kept)
                return
            }
        }
        apply(new)
        log.info("configuration reloaded")
    }

    private func apply(_ new: ExporterConfig) {
        var kept = new
        // What only a restart can change stays as it runs (see reload()).
        kept.bpf = config.bpf
        kept.views = config.views
        config = kept
        setRoutes(telemetryPath: kept.web.telemetryPath)
    }
}
