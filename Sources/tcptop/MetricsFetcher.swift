import TCPTopCore
import TCPTopHTTP

/// `--from`: one GET per call (Connection: close) with TCPTopHTTP's
/// client. A stop signal ends the wait at once; the whole fetch gives up
/// after `timeout`.
struct MetricsFetcher {
    let url: TopMetricsURL
    var timeout: Duration = .seconds(5)

    /// The exporter's series now.
    func readings() throws -> [TopCounterReading<ConnectionLabels>] {
        var options = HTTPClient.Options()
        options.timeout = timeout
        options.interrupted = { StopSignals.isPending() }
        let reply: HTTPClientReply
        do {
            reply = try HTTPClient(options: options).get(
                url.httpURL, headers: ["Accept": "text/plain", "Accept-Encoding": "identity", "User-Agent": "tcptop"])
        } catch where error.kind == .interrupted {
            throw StopSignals.Stopped()
        } catch {
            throw TopScrapeError("--from \(url): \(error)")
        }
        guard reply.status == 200 else {
            throw TopScrapeError("--from \(url): HTTP \(reply.status)" + (reply.reason.isEmpty ? "" : " \(reply.reason)"))
        }
        if let coding = reply.headers["Content-Encoding"], coding.lowercased() != "identity" {
            throw TopScrapeError("--from \(url): unsupported Content-Encoding \(coding)")
        }
        do {
            return TopScrape.readings(from: try ExpositionParser.parse(reply.text))
        } catch {
            throw TopScrapeError("--from \(url): \(error)")
        }
    }
}
