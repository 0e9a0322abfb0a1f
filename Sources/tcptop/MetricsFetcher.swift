import Foundation
import TCPTopCore
import TCPTopHTTP

/// `--from`: one GET per call (Connection: close) with TCPTopHTTP's
/// client. A stop signal ends the wait at once; the whole fetch gives up
/// after `timeout`.
struct MetricsFetcher {
    let url: TopMetricsURL
    var timeout: Duration = .seconds(5)
    /// https: the CA and client certificate, loaded once.
    private let tls: TLSClientContext?
    private let user: String?
    private let passwordFile: String?

    /// A CA or client certificate that cannot be loaded throws one line.
    init(options: TopOptions, url: TopMetricsURL) throws {
        self.url = url
        user = options.fromUser
        passwordFile = options.fromPasswordFile
        do {
            tls = url.isHTTPS ? try TLSClientContext(options.fromTLS) : nil
        } catch {
            throw TopScrapeError("--from \(url): \(error)")
        }
    }

    /// As Prometheus reads password_file: at every scrape (a rotated
    /// password is used at once), its content without the line break.
    private func authorization() throws -> String? {
        guard let user else { return nil }
        let password: String
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw TopScrapeError("--password-file \(passwordFile): \(String(cString: strerror(errno)))")
            }
            password = String(text.prefix { $0 != "\n" && $0 != "\r" })
        } else if let value = getenv("TCPTOP_PASSWORD") {
            password = String(cString: value)
        } else {
            throw TopScrapeError("--user \(user): no password (give --password-file PATH or set TCPTOP_PASSWORD)")
        }
        return basicAuthorization(user: user, password: password)
    }

    /// The exporter's series now.
    func readings() throws -> [TopCounterReading<ConnectionLabels>] {
        var options = HTTPClient.Options()
        options.timeout = timeout
        options.interrupted = { StopSignals.isPending() }
        options.tls = tls
        var headers: HTTPHeaders = ["Accept": "text/plain", "Accept-Encoding": "identity", "User-Agent": "tcptop"]
        if let authorization = try authorization() { headers["Authorization"] = authorization }
        let reply: HTTPClientReply
        do {
            reply = try HTTPClient(options: options).get(url.httpURL, headers: headers)
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
