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
    ///
    /// `<prefix>_retransmitted_segments_total` and `<prefix>_rtt_seconds`
    /// fill in the health fields. An exporter whose kernel has no
    /// retransmit hook has no retransmit family: then every reading's
    /// retransmits are nil (unknown, never a made-up 0); with the family,
    /// a series without its own sample has retransmitted nothing. A series
    /// without an RTT sample has no known RTT.
    public static func readings(from samples: [ParsedSample], prefix: String = "tcptop")
        -> [TopCounterReading<ConnectionLabels>]
    {
        let sentName = prefix + "_sent_bytes_total", receivedName = prefix + "_received_bytes_total"
        let retransmittedName = prefix + "_retransmitted_segments_total", rttName = prefix + "_rtt_seconds"
        var order: [ConnectionLabels] = []
        var readings: [ConnectionLabels: TopCounterReading<ConnectionLabels>] = [:]
        var retransmitsCounted = false
        for sample in samples {
            let name = sample.name
            guard name == sentName || name == receivedName || name == retransmittedName || name == rttName else { continue }
            if name == retransmittedName { retransmitsCounted = true }  // the overflow series counts too
            guard let labels = connectionLabels(sample.labels), sample.value.isFinite, sample.value >= 0 else { continue }
            if readings[labels] == nil {
                order.append(labels)
                readings[labels] = TopCounterReading(key: labels, labels: labels, sentBytes: 0, receivedBytes: 0)
            }
            if name == rttName {
                // Seconds with microsecond precision; past UInt32's microseconds (71 minutes) is not an RTT.
                let microseconds = (sample.value * 1e6).rounded()
                if microseconds <= Double(UInt32.max) { readings[labels]!.smoothedRTTMicroseconds = UInt32(microseconds) }
                continue
            }
            guard sample.value < 1.8e19 else { continue }
            let value = UInt64(sample.value)
            switch name {
            case sentName: readings[labels]!.sentBytes = value
            case receivedName: readings[labels]!.receivedBytes = value
            default: readings[labels]!.retransmittedSegments = value
            }
        }
        return order.map { labels in
            var reading = readings[labels]!
            if retransmitsCounted, reading.retransmittedSegments == nil { reading.retransmittedSegments = 0 }
            return reading
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
