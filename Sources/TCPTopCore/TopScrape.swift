import TCPTopHTTP

/// `tcptop --from URL`: the pure parts of reading a tcptop-exporter's
/// /metrics — the URL and the series turned into counter readings. The
/// HTTP exchange is TCPTopHTTP's client's.

/// Where to scrape: `[http://]host[:port][/path]`; the port defaults to the
/// exporter's 9435 and the path (empty or `/`) to `/metrics`.
public struct TopMetricsURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var path: String
    public var isHTTPS: Bool

    public init(host: String, port: UInt16 = WebConfig.defaultPort, path: String = "/metrics", https: Bool = false) {
        self.host = host
        self.port = port
        self.path = path
        isHTTPS = https
    }

    public init(parsing text: String) throws(TopUsageError) {
        let url: HTTPURL
        do {
            url = try HTTPURL(parsing: text, defaultPort: WebConfig.defaultPort)
        } catch {
            throw TopUsageError(error.description)
        }
        self.init(host: url.host, port: url.port, path: url.path == "/" ? "/metrics" : url.path, https: url.isHTTPS)
    }

    /// What the HTTP client is given.
    public var httpURL: HTTPURL { HTTPURL(host: host, port: port, path: path, https: isHTTPS) }

    public var description: String { httpURL.description }
}

/// Why a scrape failed; the description is one line.
public struct TopScrapeError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum TopScrape {
    /// The exporter's per-connection series as counter readings, keyed by
    /// their labels. Needs the `<prefix>_sent_bytes_total` and
    /// `<prefix>_received_bytes_total` families with all seven labels (the
    /// exporter's default view); other series, and the `__overflow__`
    /// series of a view past its max_series, are skipped.
    public static func readings(from samples: [ParsedSample], prefix: String = "tcptop")
        -> [TopCounterReading<ConnectionLabels>]
    {
        let sentName = prefix + "_sent_bytes_total", receivedName = prefix + "_received_bytes_total"
        var order: [ConnectionLabels] = []
        var counters: [ConnectionLabels: (sent: UInt64, received: UInt64)] = [:]
        for sample in samples where sample.name == sentName || sample.name == receivedName {
            guard let labels = connectionLabels(sample.labels), sample.value.isFinite, sample.value >= 0,
                sample.value < 1.8e19
            else { continue }
            let value = UInt64(sample.value)
            if counters[labels] == nil {
                order.append(labels)
                counters[labels] = (0, 0)
            }
            if sample.name == sentName { counters[labels]!.sent = value } else { counters[labels]!.received = value }
        }
        return order.map { labels in
            let counter = counters[labels]!
            return TopCounterReading(key: labels, labels: labels, sentBytes: counter.sent, receivedBytes: counter.received)
        }
    }

    static func connectionLabels(_ labels: [String: String]) -> ConnectionLabels? {
        guard let pid = labels["pid"].flatMap({ UInt32($0) }),
            let comm = labels["comm"],
            let family = labels["family"].flatMap({ AddressFamily(rawValue: $0) }),
            let localAddress = labels["laddr"], let remoteAddress = labels["raddr"],
            let localPort = labels["lport"].flatMap({ UInt16($0) }),
            let remotePort = labels["rport"].flatMap({ UInt16($0) })
        else { return nil }
        return ConnectionLabels(
            pid: pid, comm: Array(comm.utf8), family: family, localAddress: localAddress, localPort: localPort,
            remoteAddress: remoteAddress, remotePort: remotePort)
    }
}
