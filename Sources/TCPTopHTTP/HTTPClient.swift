/// An HTTP/1.1 client on POSIX sockets, for tcptop --from, the bench and
/// the tests: every step is bounded by a deadline, every failure is one line.
///
///     let reply = try HTTPClient().get(url: "http://127.0.0.1:9435/metrics")
///
/// `connect` gives an `HTTPClientConnection` for several requests on one
/// kept-alive connection, or for raw bytes.
public struct HTTPClient: Sendable {
    public struct Options: Sendable {
        /// The budget of each call (connect, a request and its reply); for
        /// `get` and `request`, of the whole exchange.
        public var timeout: Duration = .seconds(5)
        /// Replies with a larger body (after gzip decoding) are refused.
        public var maxBodyBytes = 512 << 20
        /// Replies with a larger status line and headers are refused.
        public var maxHeadBytes = 64 << 10
        /// Send `Accept-Encoding: gzip` and hand back the body inflated.
        /// Off, a body is returned as it came, whatever its Content-Encoding.
        public var acceptGzip = false
        /// SO_RCVBUF, set before connecting (tests use a small one to make a server block).
        public var receiveBufferBytes: Int32?
        /// Polled every 100 ms while waiting; true ends the call with `.interrupted`
        /// (tcptop: a pending stop signal).
        public var interrupted: (@Sendable () -> Bool)?
        /// For https:// URLs: the CA and client certificate (nil: the system's CAs, no client certificate).
        public var tls: TLSClientContext?

        public init() {}
    }

    public var options: Options

    public init(options: Options = Options()) {
        self.options = options
    }

    /// A connection to the first address of `host` that accepts; with
    /// `tls`, after a TLS handshake that verified the server's certificate
    /// for `host` (against `options.tls`' CA).
    public func connect(host: String, port: UInt16, tls: Bool = false, deadline: ContinuousClock.Instant? = nil)
        throws(HTTPClientError) -> HTTPClientConnection
    {
        try HTTPClientConnection(host: host, port: port, tls: tls, options: options, deadline: deadline ?? .now + options.timeout)
    }

    /// One request on a connection of its own (`Connection: close`).
    public func request(_ method: String, _ url: HTTPURL, headers: HTTPHeaders = [:], body: [UInt8] = [])
        throws(HTTPClientError) -> HTTPClientReply
    {
        let deadline = ContinuousClock.now + options.timeout
        let connection = try connect(host: url.host, port: url.port, tls: url.isHTTPS, deadline: deadline)
        var headers = headers
        headers["Connection"] = "close"
        return try connection.request(method, url.path, headers: headers, body: body, deadline: deadline)
    }

    public func get(_ url: HTTPURL, headers: HTTPHeaders = [:]) throws(HTTPClientError) -> HTTPClientReply {
        try request("GET", url, headers: headers)
    }

    /// `get` of `http[s]://host[:port][/path]` (port 80 or 443 and path `/` by default).
    public func get(url text: String, headers: HTTPHeaders = [:]) throws(HTTPClientError) -> HTTPClientReply {
        try get(HTTPURL(parsing: text), headers: headers)
    }
}

/// One reply. `headers` compare names case-insensitively.
public struct HTTPClientReply: Sendable {
    public var version: HTTPVersion
    public var status: Int
    public var reason: String
    public var headers: HTTPHeaders
    /// Without its transfer coding, and inflated when gzip was asked for.
    public var body: [UInt8]
    /// The connection can carry another request (not closed nor close-delimited).
    public var keepsConnectionOpen: Bool

    public var text: String { String(decoding: body, as: UTF8.self) }
    /// `HTTP/1.1 404 Not Found`, as in error messages.
    public var statusLine: String { "\(version) \(status)" + (reason.isEmpty ? "" : " \(reason)") }
}

/// Why a request failed; the description is one line, e.g.
/// `connect 127.0.0.1:9435: Connection refused` or
/// `timed out after 5 s reading the reply`.
public struct HTTPClientError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        case badURL, badRequest, resolve
        case connect(errno: Int32)
        case timedOut
        /// The peer closed or reset the connection before the reply was complete.
        case closed
        case io(errno: Int32)
        case badReply
        case tooLarge
        case interrupted
        /// The TLS handshake failed or the certificate was refused (either side).
        case tls
    }

    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
