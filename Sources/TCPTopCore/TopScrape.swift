/// `tcptop --from URL`: the pure parts of reading a tcptop-exporter's
/// /metrics — the URL, the HTTP reply, and the series turned into counter
/// readings. The socket I/O lives in the tcptop executable.

/// Where to scrape: `[http://]host[:port][/path]`; the port defaults to the
/// exporter's 9435 and the path (empty or `/`) to `/metrics`.
public struct TopMetricsURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var path: String

    public init(host: String, port: UInt16 = WebConfig.defaultPort, path: String = "/metrics") {
        self.host = host
        self.port = port
        self.path = path
    }

    public init(parsing text: String) throws(TopUsageError) {
        var rest = Substring(text)
        if let scheme = rest.range(of: "://") {
            let name = rest[..<scheme.lowerBound].lowercased()
            guard name == "http" else {
                throw TopUsageError("\"\(text)\": only http:// URLs are supported")
            }
            rest = rest[scheme.upperBound...]
        }
        let authority = rest.prefix { $0 != "/" }
        let pathPart = rest.dropFirst(authority.count)
        path = pathPart.isEmpty || pathPart == "/" ? "/metrics" : String(pathPart)

        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw TopUsageError("\"\(text)\": missing \"]\" after the IPv6 address")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw TopUsageError("\"\(text)\": unexpected text after \"]\"") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw TopUsageError("\"\(text)\": no host") }
        if let portText {
            guard let number = UInt16(portText), number > 0 else {
                throw TopUsageError("\"\(text)\": invalid port \"\(portText)\"")
            }
            port = number
        } else {
            port = WebConfig.defaultPort
        }
    }

    /// The host as written in a URL or Host header (IPv6 in brackets).
    public var hostText: String { host.contains(":") ? "[\(host)]" : host }

    public var description: String { "http://\(hostText):\(port)\(path)" }

    /// The GET request; identity encoding and one request per connection.
    public var request: String {
        "GET \(path) HTTP/1.1\r\nHost: \(hostText):\(port)\r\nAccept: text/plain\r\n"
            + "Accept-Encoding: identity\r\nUser-Agent: tcptop\r\nConnection: close\r\n\r\n"
    }
}

/// Why a scrape failed; the description is one line.
public struct TopScrapeError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum TopScrape {
    /// The body of a complete HTTP/1.1 reply read until the server closed:
    /// status 200 required; Content-Length and chunked bodies are handled.
    public static func body(ofReply raw: [UInt8]) throws(TopScrapeError) -> [UInt8] {
        let separator = Array("\r\n\r\n".utf8)
        guard let end = raw.firstRange(of: separator) else {
            throw TopScrapeError(raw.isEmpty ? "empty reply" : "incomplete HTTP reply")
        }
        let head = String(decoding: raw[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n")
        let statusLine = head.first.map(String.init) ?? ""
        let statusParts = statusLine.split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/") else {
            throw TopScrapeError("not an HTTP reply: \"\(statusLine.prefix(60))\"")
        }
        guard statusParts[1] == "200" else {
            throw TopScrapeError("HTTP \(statusParts[1...].joined(separator: " "))")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingSpaces()
        }
        if let encoding = headers["content-encoding"], encoding.lowercased() != "identity" {
            throw TopScrapeError("unsupported Content-Encoding \(encoding)")
        }
        let body = Array(raw[end.upperBound...])
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            return try dechunk(body)
        }
        if let lengthText = headers["content-length"] {
            guard let length = Int(lengthText), length >= 0 else { throw TopScrapeError("bad Content-Length \(lengthText)") }
            guard body.count >= length else { throw TopScrapeError("reply cut short (\(body.count) of \(length) bytes)") }
            return Array(body.prefix(length))
        }
        return body
    }

    private static func dechunk(_ data: [UInt8]) throws(TopScrapeError) -> [UInt8] {
        var result: [UInt8] = []
        var index = 0
        let crlf = Array("\r\n".utf8)
        while true {
            guard let lineEnd = data[index...].firstRange(of: crlf) else { throw TopScrapeError("bad chunked body") }
            let sizeText = String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self).prefix { $0 != ";" }
            guard let size = Int(sizeText.trimmingSpaces(), radix: 16), size >= 0 else {
                throw TopScrapeError("bad chunk size")
            }
            index = lineEnd.upperBound
            if size == 0 { return result }
            guard index + size <= data.count else { throw TopScrapeError("chunked body cut short") }
            result += data[index..<index + size]
            index += size + 2
        }
    }

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

extension StringProtocol {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
