/// The socket-free parts of reading a reply (RFC 9112): the head, how the
/// body is framed, chunk-size lines. The connection does the reading.
enum HTTPReplyParser {
    struct Head {
        var version: HTTPVersion
        var status: Int
        var reason: String
        var headers: HTTPHeaders
    }

    enum Framing: Equatable {
        case none
        case length(Int)
        case chunked
        case untilClose
    }

    /// The status line and header fields, without the final empty line.
    static func parseHead(_ bytes: ArraySlice<UInt8>) throws(HTTPClientError) -> Head {
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false).map { line in
            line.last == 13 ? line.dropLast() : line
        }
        let statusLine = lines[0]
        guard let version = parseVersion(statusLine.prefix(8)), statusLine.count >= 12, statusLine[statusLine.startIndex + 8] == 32,
              let status = Int(text(statusLine.dropFirst(9).prefix(3))), (100...999).contains(status),
              statusLine.count == 12 || statusLine[statusLine.startIndex + 12] == 32
        else {
            throw HTTPClientError(.badReply, "not an HTTP reply: \"\(printable(statusLine.prefix(60)))\"")
        }
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: 58), colon > line.startIndex,
                  line[..<colon].allSatisfy({ $0 > 32 && $0 < 127 })
            else {
                throw HTTPClientError(.badReply, "malformed header line \"\(printable(line.prefix(60)))\"")
            }
            headers.add(name: text(line[..<colon]), value: text(line[(colon + 1)...]).trimmingWhitespace())
        }
        return Head(version: version, status: status, reason: text(statusLine.dropFirst(13)), headers: headers)
    }

    /// RFC 9112 §6.3, in order: no body for HEAD, 1xx, 204 and 304; then
    /// chunked (another final coding: until close); then Content-Length.
    static func framing(of head: Head, method: String) throws(HTTPClientError) -> Framing {
        if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 { return .none }
        let codings = head.headers.values(for: "Transfer-Encoding").flatMap { $0.split(separator: ",") }
        if let last = codings.last {
            return last.trimmingWhitespace().lowercased() == "chunked" ? .chunked : .untilClose
        }
        let lengths = head.headers.values(for: "Content-Length").flatMap { $0.split(separator: ",") }
            .map { $0.trimmingWhitespace() }
        guard let first = lengths.first else { return .untilClose }
        // Repeated values must agree (a proxy may have merged fields); digits only, no sign.
        guard lengths.allSatisfy({ $0 == first }), first.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let length = Int(first)
        else {
            throw HTTPClientError(.badReply, "bad Content-Length \"\(printable(lengths.joined(separator: ",").utf8.prefix(40)))\"")
        }
        return .length(length)
    }

    /// Whether another request may follow on the connection.
    static func keepsConnectionOpen(_ head: Head, framing: Framing) -> Bool {
        if framing == .untilClose || head.status == 101 { return false }
        // Both framings at once is a smuggling pattern: do not trust what follows.
        if !head.headers.values(for: "Transfer-Encoding").isEmpty && !head.headers.values(for: "Content-Length").isEmpty {
            return false
        }
        let tokens = head.headers.values(for: "Connection").flatMap { $0.split(separator: ",") }
            .map { $0.trimmingWhitespace().lowercased() }
        if tokens.contains("close") { return false }
        return head.version == .http1_1 || tokens.contains("keep-alive")
    }

    /// The size of a `size[;extension]` chunk line, in hex.
    static func chunkSize(line: ArraySlice<UInt8>) throws(HTTPClientError) -> Int {
        let digits = text(line.prefix { $0 != 59 }).trimmingWhitespace()
        guard !digits.isEmpty, digits.count <= 15, let size = Int(digits, radix: 16), size >= 0 else {
            throw HTTPClientError(.badReply, "bad chunk size line \"\(printable(line.prefix(40)))\"")
        }
        return size
    }

    private static func parseVersion(_ bytes: ArraySlice<UInt8>) -> HTTPVersion? {
        let text = text(bytes)
        guard text.count == 8, text.hasPrefix("HTTP/"), let major = text.dropFirst(5).first?.wholeNumberValue,
              text.dropFirst(6).first == ".", let minor = text.last?.wholeNumberValue
        else { return nil }
        return HTTPVersion(major: major, minor: minor)
    }

    private static func text<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String { String(decoding: bytes, as: UTF8.self) }

    /// Bytes as one printable line for an error message: control bytes become `.`.
    static func printable<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        String(decoding: bytes.map { $0 < 32 || $0 == 127 ? 46 : $0 }, as: UTF8.self)
    }
}
