import Glibc

/// Turns a handler's response into the bytes on the wire: framing headers,
/// optional gzip, and no body for HEAD.
struct HTTPResponseEncoder {
    var gzipLevel: Int32

    /// How a streamed body is delimited.
    enum Framing { case contentLength(Int), chunked, close }

    /// The head and the body to send for a body known whole. For HEAD the
    /// body is empty but the head carries the length a GET would have had
    /// (RFC 9110 §9.3.2). A streamed body gets an empty body here: see `streamHead`.
    func encode(_ response: HTTPResponse, for request: HTTPRequest?, keepAlive: Bool) -> (head: [UInt8], body: [UInt8]) {
        var headers = managedHeadersRemoved(response.headers)
        var body: [UInt8] = []
        if case .bytes(let bytes) = response.body { body = bytes }
        if !body.isEmpty, negotiateGzip(&headers, for: request), let compressed = HTTPContentCoding.gzip(body, level: gzipLevel) {
            headers.add(name: "Content-Encoding", value: "gzip")
            body = compressed
        }
        let head = self.head(response.status, headers, framing: .contentLength(body.count), keepAlive: keepAlive)
        return (head, request?.method == "HEAD" ? [] : body)
    }

    /// The head of a streamed response (`framing` is `.chunked` or `.close`),
    /// and whether the body is to be gzipped.
    func streamHead(_ response: HTTPResponse, for request: HTTPRequest, framing: Framing, keepAlive: Bool) -> (head: [UInt8], gzip: Bool) {
        var headers = managedHeadersRemoved(response.headers)
        let gzip = negotiateGzip(&headers, for: request)
        if gzip { headers.add(name: "Content-Encoding", value: "gzip") }
        return (head(response.status, headers, framing: framing, keepAlive: keepAlive), gzip)
    }

    private func managedHeadersRemoved(_ given: HTTPHeaders) -> HTTPHeaders {
        var headers = given.filter { isSafe($0.name) && isSafe($0.value) }
        for managed in ["Content-Length", "Transfer-Encoding", "Connection", "Date"] { headers.remove(name: managed) }
        return headers
    }

    /// True when the body is to be gzipped: the client takes it and the
    /// handler did not encode the body itself. Adds `Vary` either way, as the
    /// body depends on Accept-Encoding whether or not this client asked for gzip.
    private func negotiateGzip(_ headers: inout HTTPHeaders, for request: HTTPRequest?) -> Bool {
        guard headers["Content-Encoding"] == nil else { return false }
        headers.add(name: "Vary", value: "Accept-Encoding")
        return request?.acceptsGzip == true
    }

    private func head(_ status: Int, _ given: HTTPHeaders, framing: Framing, keepAlive: Bool) -> [UInt8] {
        var headers = given
        switch framing {
        case .contentLength(let length): headers.add(name: "Content-Length", value: String(length))
        case .chunked: headers.add(name: "Transfer-Encoding", value: "chunked")
        case .close: break
        }
        headers.add(name: "Date", value: Self.httpDate())
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        var head = "HTTP/1.1 \(status) \(Self.reasonPhrase(status))\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return Array(head.utf8)
    }

    /// A CR or LF from a handler would let it split the response; such a field is dropped.
    private func isSafe(_ text: String) -> Bool {
        !text.utf8.contains { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 204: "No Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Status \(status)"
        }
    }

    /// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`; written by hand
    /// because strftime's day and month names follow the locale.
    static func httpDate(_ seconds: time_t = time(nil)) -> String {
        var seconds = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func twoDigits(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(twoDigits(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(twoDigits(parts.tm_hour)):\(twoDigits(parts.tm_min)):\(twoDigits(parts.tm_sec)) GMT"
    }
}

extension HTTPHeaders {
    func filter(_ isIncluded: ((name: String, value: String)) -> Bool) -> HTTPHeaders {
        var result = HTTPHeaders()
        for field in fields where isIncluded(field) { result.add(name: field.name, value: field.value) }
        return result
    }
}
