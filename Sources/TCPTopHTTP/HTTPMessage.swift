/// The values that cross the boundary between the HTTP server and its handler.

public struct HTTPVersion: Hashable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public var description: String { "HTTP/\(major).\(minor)" }
}

/// Header fields in arrival order. Names compare case-insensitively
/// (RFC 9110 §5.1); the original spelling is kept for output.
public struct HTTPHeaders: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (name, value) in elements { add(name: name, value: value) }
    }

    public mutating func add(name: String, value: String) {
        fields.append((name, value))
    }

    /// Replaces every field called `name` with one field, or removes them all when `value` is nil.
    public subscript(name: String) -> String? {
        get { fields.first { $0.name.lowercased() == name.lowercased() }?.value }
        set {
            remove(name: name)
            if let newValue { add(name: name, value: newValue) }
        }
    }

    /// Every value of `name`, in order (a field may be repeated, e.g. `Accept-Encoding`).
    public func values(for name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    public mutating func remove(name: String) {
        fields.removeAll { $0.name.lowercased() == name.lowercased() }
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        fields.makeIterator()
    }

    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }
}

public struct HTTPRequest: Sendable, Equatable {
    public var method: String
    /// The request target exactly as sent, e.g. `/metrics?x=1`.
    public var target: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    /// Declared body length. The server discards bodies; handlers never see them.
    public var contentLength: Int

    public init(method: String, target: String, version: HTTPVersion = .http1_1,
                headers: HTTPHeaders = [:], contentLength: Int = 0) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.contentLength = contentLength
    }

    /// The path without the query, for routing. An absolute-form target
    /// (`http://host/path`) yields its path.
    public var path: String {
        var rest = Substring(target)
        if !rest.hasPrefix("/"), let colon = rest.firstIndex(of: ":"), rest[colon...].hasPrefix("://") {
            rest = rest[rest.index(colon, offsetBy: 3)...]
            rest = rest.firstIndex(of: "/").map { rest[$0...] } ?? "/"
        }
        return String(rest.prefix { $0 != "?" && $0 != "#" })
    }

    /// The query string after `?`, if any.
    public var query: String? {
        target.firstIndex(of: "?").map { String(target[target.index(after: $0)...]) }
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless told `keep-alive`.
    public var wantsKeepAlive: Bool {
        let tokens = headers.values(for: "Connection")
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingWhitespace().lowercased() }
        if tokens.contains("close") { return false }
        if version == .http1_0 { return tokens.contains("keep-alive") }
        return true
    }

    /// Whether the client takes a gzip body (see `HTTPContentCoding.acceptsGzip`).
    public var acceptsGzip: Bool {
        HTTPContentCoding.acceptsGzip(headers.values(for: "Accept-Encoding"))
    }
}

/// Called with each piece of a streamed body, in order; throws when the client is gone or too slow, and the producer then stops (rethrows).
public typealias HTTPBodySink = (ArraySlice<UInt8>) throws -> Void
/// Writes a body piece by piece into the sink, on the thread that answers
/// the request (within the concurrency limit). Never called for HEAD.
public typealias HTTPBodyProducer = @Sendable (_ sink: HTTPBodySink) throws -> Void

/// A body known whole, or one written as it is produced (then framed with
/// chunked encoding on a kept-alive connection, or ended by the close).
public enum HTTPBody: Sendable {
    case bytes([UInt8])
    case stream(HTTPBodyProducer)
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// The server sets `Content-Length`, `Transfer-Encoding`, `Connection`,
    /// `Date`, and for gzip `Content-Encoding` and `Vary` itself; values
    /// given here for those are replaced.
    public var headers: HTTPHeaders
    public var body: HTTPBody

    public init(status: Int, headers: HTTPHeaders = [:], body: HTTPBody) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.init(status: status, headers: headers, body: .bytes(body))
    }

    /// A streamed response: `producer` writes the body when (and only if) it is sent.
    public static func stream(_ status: Int = 200, headers: HTTPHeaders = [:],
                              _ producer: @escaping HTTPBodyProducer) -> HTTPResponse {
        HTTPResponse(status: status, headers: headers, body: .stream(producer))
    }

    /// A `text/plain` response, the usual shape of errors.
    public static func text(_ status: Int, _ text: String, headers: HTTPHeaders = [:]) -> HTTPResponse {
        var headers = headers
        if headers["Content-Type"] == nil {
            headers["Content-Type"] = "text/plain; charset=utf-8"
        }
        return HTTPResponse(status: status, headers: headers, body: Array(text.utf8))
    }
}

/// The handler the server calls for each well-formed request. It may be
/// called concurrently from several threads.
public typealias HTTPHandler = @Sendable (HTTPRequest) -> HTTPResponse

extension StringProtocol {
    /// Trims spaces and tabs only: HTTP's "optional whitespace".
    func trimmingWhitespace() -> String {
        let isWhitespace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isWhitespace($0) }),
              let last = lastIndex(where: { !isWhitespace($0) }) else { return "" }
        return String(self[first...last])
    }
}
