/// Where the client sends a request: `[http[s]://]host[:port][/path]`. The
/// host may be a name, an IPv4 literal or a bracketed IPv6 literal; the
/// path (with any query) defaults to `/`.
public struct HTTPURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var path: String
    /// https: the request goes through TLS (`HTTPClient.Options.tls`).
    public var isHTTPS: Bool

    public init(host: String, port: UInt16? = nil, path: String = "/", https: Bool = false) {
        self.host = host
        self.port = port ?? (https ? 443 : 80)
        self.path = path
        isHTTPS = https
    }

    /// Errors are one line that quotes `text`; their kind is `.badURL`.
    /// Without `defaultPort`, 80 for http and 443 for https.
    public init(parsing text: String, defaultPort: UInt16? = nil) throws(HTTPClientError) {
        func invalid(_ problem: String) -> HTTPClientError {
            HTTPClientError(.badURL, "\"\(HTTPReplyParser.printable(text.utf8))\": \(problem)")
        }
        var rest = Substring(text)
        isHTTPS = false
        if let scheme = rest.firstRange(of: "://") {
            let name = rest[..<scheme.lowerBound].lowercased()
            guard name == "http" || name == "https" else { throw invalid("only http:// and https:// URLs are supported") }
            isHTTPS = name == "https"
            rest = rest[scheme.upperBound...]
        }
        let authority = rest.prefix { $0 != "/" }
        let pathPart = rest.dropFirst(authority.count)
        path = pathPart.isEmpty ? "/" : String(pathPart)
        // Spaces or control characters would end the request line early (or add header lines).
        guard path.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f }) else {
            throw invalid("the path has a space or a control character")
        }

        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid("missing \"]\" after the IPv6 address") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw invalid("unexpected text after \"]\"") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw invalid("no host") }
        guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:%".contains($0)) }) else {
            throw invalid("the host must be a name or an IP address")
        }
        if let portText {
            guard let number = UInt16(portText), number > 0 else { throw invalid("invalid port \"\(portText)\"") }
            port = number
        } else {
            port = defaultPort ?? (isHTTPS ? 443 : 80)
        }
    }

    /// The host as written in a URL or Host header (IPv6 in brackets).
    public var hostText: String { host.contains(":") ? "[\(host)]" : host }

    /// `host:port` as in the Host header and in error messages.
    public var authority: String { "\(hostText):\(port)" }

    public var description: String { (isHTTPS ? "https://" : "http://") + "\(authority)\(path)" }
}
