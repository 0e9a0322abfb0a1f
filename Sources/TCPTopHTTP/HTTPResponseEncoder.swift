import Glibc

/// Turns a handler's response into the bytes on the wire: framing headers,
/// optional gzip, and no body for HEAD.
struct HTTPResponseEncoder {
    var gzipLevel: Int32

    /// The head and the body to send. For HEAD the body is empty but the head
    /// carries the length a GET would have had (RFC 9110 §9.3.2).
    func encode(_ response: HTTPResponse, for request: HTTPRequest?, keepAlive: Bool) -> (head: [UInt8], body: [UInt8]) {
        var headers = response.headers.filter { isSafe($0.name) && isSafe($0.value) }
        for managed in ["Content-Length", "Transfer-Encoding", "Connection", "Date"] { headers.remove(name: managed) }
        var body = response.body

        let handlerEncoded = headers["Content-Encoding"] != nil
        if !body.isEmpty, !handlerEncoded {
            // The body depends on Accept-Encoding whether or not this client asked for gzip.
            headers.add(name: "Vary", value: "Accept-Encoding")
            if request?.acceptsGzip == true, let compressed = HTTPContentCoding.gzip(body, level: gzipLevel) {
                headers.add(name: "Content-Encoding", value: "gzip")
                body = compressed
            }
        }
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Date", value: Self.httpDate())
        if !keepAlive { headers.add(name: "Connection", value: "close") }

        var head = "HTTP/1.1 \(response.status) \(Self.reasonPhrase(response.status))\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return (Array(head.utf8), request?.method == "HEAD" ? [] : body)
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
