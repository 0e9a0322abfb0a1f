import TCPTopHTTP
/// The daemon configuration. Every value has a default (these are the
/// embedded defaults; Config/tcptop-exporter.yml documents the same ones).
/// The command line overrides some fields after loading, hence `var`s.
public struct ExporterConfig: Equatable, Sendable {
    public var web = WebConfig()
    public var bpf = BPFConfig()
    public var connections = ConnectionsConfig()
    /// The shipped views: per connection end, at most `ViewConfig.shippedMaxSeries`
    /// series; and per unit, role, remote network and server port.
    public var views: [ViewConfig] = [ViewConfig(maxSeries: ViewConfig.shippedMaxSeries), ViewConfig.shippedByUnit]
    /// Named address prefixes, for views' `remote_network` label.
    public var networks: [NamedNetwork] = NamedNetwork.shipped
    public var log = LogConfig()

    public init() {}
}

public struct WebConfig: Equatable, Sendable {
    public static let defaultPort: UInt16 = 9435

    /// Where the HTTP server listens; `host == nil` means all IPv4 and IPv6 addresses.
    public var listenAddresses = [ListenAddress(host: nil, port: WebConfig.defaultPort)]
    public var telemetryPath = "/metrics"
    /// Concurrent requests served before answering 503.
    public var maxRequests = 40
    /// Open client connections held at once (idle ones cost a few hundred
    /// bytes each); at the limit the oldest idle ones are closed first.
    public var maxConnections = 16384
    /// A client must send its whole request head within this, from its first byte.
    public var readTimeout: Duration = .seconds(10)
    public var writeTimeout: Duration = .seconds(30)
    /// How long a kept-alive connection may wait for its next request.
    public var idleTimeout: Duration = .seconds(60)
    /// The exporter-toolkit web config file (basic auth, headers); nil: none.
    /// Followed while running, not rebound: see `WebConfigWatcher`.
    public var configFile: String?

    public static let maxConnectionsRange = 1...1_000_000
    /// The longest `read_timeout`, `write_timeout` and `idle_timeout`: each
    /// sets a deadline on a socket; longer would only hold a connection.
    public static let maxTimeout: Duration = .seconds(3600)

    public init() {}
}

extension WebConfig {
    /// What `telemetryPathProblem` asks of a path, for "must be ..., got a list".
    public static let telemetryPathRule = "a path that starts with \"/\" and is not \"/\""

    /// The one rule for `web.telemetry_path` and `--web.telemetry-path`: nil
    /// when `path` can be served, else the problem, in words. Requests are
    /// routed by their path, which ends before "?" or "#", and "/" is the
    /// landing page: any other path would answer every scrape with 404.
    public static func telemetryPathProblem(_ path: String) -> String? {
        guard path.hasPrefix("/"), path != "/", !path.contains(where: { $0.isWhitespace || $0 == "?" || $0 == "#" }) else {
            return "must be \(telemetryPathRule), without spaces, \"?\" or \"#\", got \"\(path)\""
        }
        return nil
    }
}

public struct BPFConfig: Equatable, Sendable {
    public static let mapCapacityRange = 1...16_777_216

    /// Sockets the kernel side tracks at once.
    public var mapCapacity = 65536
    /// Which kernel hooks count the bytes.
    public var attachMode = BPFAttachMode.auto
    /// How user space reads the counters from the kernel.
    public var readPath = BPFReadPath.auto

    public init() {}
}

/// Which kernel hooks count the bytes. `auto` picks the best the running
/// kernel offers; the others force one (and fail in one line when the
/// kernel lacks it).
public enum BPFAttachMode: String, CaseIterable, Sendable {
    case auto
    /// tp_btf on the sock:sock_send_length / sock_recv_length tracepoints (Linux >= 6.3).
    case tpBTF = "tp_btf"
    /// raw_tp on the same tracepoints, for a kernel that refuses tp_btf.
    case rawTP = "raw_tp"
    /// fexit on tcp_sendmsg / tcp_recvmsg (and tcp_sendpage where it exists).
    case fexit
    /// kprobe/kretprobe on the same functions, for kernels without BPF trampolines.
    case kprobe
}

/// How user space reads the counters. `auto` takes the first the running
/// kernel allows, in this order; the others force one.
public enum BPFReadPath: String, CaseIterable, Sendable {
    case auto
    /// Owners' counters in socket-local storage, read by its iterator program.
    case storageIterator = "storage_iterator"
    /// Owners' counters in an array found through socket storage, read
    /// through a shared mapping (kernels that refuse the iterator).
    case storageArray = "storage_array"
    /// Owners' counters in a hash keyed by socket, read with batch lookups.
    case socketHash = "socket_hash"
}

public struct ConnectionsConfig: Equatable, Sendable {
    /// How long a closed connection's series stays after its last activity.
    public var closedRetention: Duration = .seconds(300)
    /// How often closed connections are collected between scrapes.
    public var pollInterval: Duration = .seconds(1)

    /// The longest `poll_interval`: it is a timer's period (and twice it is
    /// the watchdog's patience), which must fit a dispatch time.
    public static let maxPollInterval: Duration = .seconds(3600)
    /// The longest `closed_retention`: closed ends are kept in memory that long.
    public static let maxClosedRetention: Duration = .seconds(7 * 86400)

    public init() {}
}

/// The labels a connection end has, in the order views write them: the
/// kernel's (pid to rport), then the ones made from what it captured with
/// them: the process's systemd unit, cgroup v2 path and container (from its
/// cgroup id), its uid and user name, the end's role (client: connected,
/// server: accepted, unknown: opened before the tracer), and the named
/// network of its remote address.
public enum ConnectionLabel: String, CaseIterable, Sendable {
    case pid, comm, family, laddr, lport, raddr, rport
    case unit, cgroup, container, uid, user, role
    case remoteNetwork = "remote_network"

    /// A view's labels when it lists none: one series per connection end.
    public static let perConnection: [ConnectionLabel] = [.pid, .comm, .family, .laddr, .lport, .raddr, .rport]
}

/// One set of metric families: connection ends whose kept labels are equal
/// are summed into one series.
public struct ViewConfig: Equatable, Sendable {
    /// Families are `<prefix>_sent_bytes_total`, `<prefix>_received_bytes_total`,
    /// `<prefix>_retransmitted_segments_total`, `<prefix>_rtt_seconds`, the
    /// connection outcomes (`<prefix>_connections_opened_total`,
    /// `_connections_established_total`, `_connect_failures_total`,
    /// `_connections_closed_total`, `_resets_total`) and the histograms configured.
    public var prefix = "tcptop"
    /// Kept labels, in `ConnectionLabel.allCases` order.
    public var labels = ConnectionLabel.perConnection
    /// At most this many series (0 = no limit); further label sets share one overflow series.
    public var maxSeries = 0
    /// Upper bounds in seconds of the histograms the view renders; nil: the
    /// view has no such histogram (a series without an observation has no
    /// storage for it either). `<prefix>_connect_duration_seconds`:
    /// SYN sent → established, per client end.
    public var connectDurationBuckets: [Double]?
    /// `<prefix>_connection_duration_seconds`: established → closed, per end at its close.
    public var connectionDurationBuckets: [Double]?
    /// `<prefix>_connection_rtt_seconds`: an end's last smoothed RTT, at its close.
    public var rttBuckets: [Double]?
    /// The client side's port reads "ephemeral": a client end's lport, a
    /// server end's rport (an end of unknown role keeps both), so that a
    /// view by role and port has a series per service, not per connection.
    public var ephemeralClientPort = false
    /// The shipped aggregate view: a series per unit, role, remote network
    /// and server port (the client side's port reads "ephemeral").
    public static let shippedByUnit = ViewConfig(
        prefix: "tcptop_unit", labels: [.lport, .rport, .unit, .role, .remoteNetwork], maxSeries: 5000, ephemeralClientPort: true)
    /// The shipped per-connection view's bound: a scrape of 100k series took
    /// 36 ms and 95 MiB peak RSS here (README, "Performance").
    public static let shippedMaxSeries = 100_000
    /// What a view's bucket list may hold: bounds in seconds, strictly
    /// increasing, each one microsecond or more (the resolution of what is observed).
    public static let maxBuckets = 30
    public static let bucketRange = 0.000001...1e9

    public init(prefix: String = "tcptop", labels: [ConnectionLabel] = ConnectionLabel.perConnection, maxSeries: Int = 0,
                connectDurationBuckets: [Double]? = nil, connectionDurationBuckets: [Double]? = nil,
                rttBuckets: [Double]? = nil, ephemeralClientPort: Bool = false) {
        self.prefix = prefix
        self.ephemeralClientPort = ephemeralClientPort
        self.labels = labels
        self.maxSeries = maxSeries
        self.connectDurationBuckets = connectDurationBuckets
        self.connectionDurationBuckets = connectionDurationBuckets
        self.rttBuckets = rttBuckets
    }

    /// nil when `buckets` can be a view's bucket list, else the problem, in words.
    public static func bucketsProblem(_ buckets: [Double]) -> String? {
        guard !buckets.isEmpty else { return "must list at least one upper bound" }
        guard buckets.count <= maxBuckets else { return "must list at most \(maxBuckets) upper bounds, got \(buckets.count)" }
        for (position, bound) in buckets.enumerated() {
            guard bound.isFinite, bucketRange.contains(bound) else {
                return "bounds must be seconds from 0.000001 to 1e9, got \(bound) at [\(position)]"
            }
            if position > 0 && bound <= buckets[position - 1] {
                return "bounds must be strictly increasing, got \(bound) after \(buckets[position - 1]) at [\(position)]"
            }
        }
        return nil
    }
}

public enum LogLevel: String, CaseIterable, Sendable {
    case debug, info, warn, error
}

public enum LogFormat: String, CaseIterable, Sendable {
    case logfmt, json
}

public struct LogConfig: Equatable, Sendable {
    public var level = LogLevel.info
    public var format = LogFormat.logfmt

    public init() {}
}

/// A configuration problem, described in one line that names the key.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    /// Dotted path of the offending key, like `views[1].prefix`; empty for the whole file.
    public var key: String
    public var problem: String
    /// Which file: "config" (`--config.file`) or "web config" (`--web.config.file`).
    public var source: String

    public init(key: String, problem: String, source: String = "config") {
        self.key = key
        self.problem = problem
        self.source = source
    }

    /// One line, whatever the file holds: a quoted value or key with a line
    /// break or another control character in it is written escaped (`\n`, `\u{1B}`).
    public var description: String {
        let line = key.isEmpty ? "\(source): \(problem)" : "\(source): \(key): \(problem)"
        guard line.unicodeScalars.contains(where: Self.needsEscape) else { return line }
        var escaped = ""
        for scalar in line.unicodeScalars {
            switch scalar {
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            case _ where Self.needsEscape(scalar): escaped += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    /// Controls (C0, DEL, C1) and the Unicode line and paragraph separators.
    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }
}

extension Duration {
    /// The duration as (fractional) seconds, for clocks kept as `Double`.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
