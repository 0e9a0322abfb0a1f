/// Pure parsing of an HTTP/1.x request head (RFC 9112 §2–5), no I/O.
///
/// Deliberately strict, because leniency in a head parser is how request
/// smuggling starts: lines end in CRLF only, the request line is split by
/// single spaces, no whitespace before a header's colon, no obsolete line
/// folding, no control characters. Leading empty lines are skipped (§2.2).
///
/// Bodies: the exporter serves no method that takes one. A `Content-Length`
/// body is reported in `contentLength` so the server can read and discard it
/// (keeping the connection usable); any `Transfer-Encoding` is refused (501),
/// since framing it would mean implementing chunked decoding for nothing.
public enum HTTPRequestParser {
    public enum Result: Equatable, Sendable {
        /// More bytes are needed.
        case incomplete
        /// A full head; `headLength` bytes of the input belong to it.
        case complete(HTTPRequest, headLength: Int)
    }

    public static let defaultMaxHeadSize = 8 * 1024

    public static func parse(_ bytes: ArraySlice<UInt8>, maxHeadSize: Int = defaultMaxHeadSize)
        throws(HTTPRequestError) -> Result
    {
        var start = bytes.startIndex
        while bytes[start...].starts(with: crlf) { start += 2 }

        let headEnd = firstIndex(of: crlfcrlf, in: bytes[start...])
        // Reject what can never become valid before waiting for more bytes.
        let head = bytes[start..<(headEnd.map { $0 + 4 } ?? bytes.endIndex)]
        if head.indices.contains(where: { head[$0] == lf && ($0 == start || head[$0 - 1] != cr) }) {
            throw .bareLineFeed
        }
        // Leading empty lines count toward the limit, so they cannot grow the buffer forever.
        guard let headEnd else {
            try refuseEarly(head)
            if bytes.count > maxHeadSize {
                let inRequestLine = !head.isEmpty && firstIndex(of: crlf, in: head) == nil
                throw inRequestLine ? .requestLineTooLong : .headTooLarge
            }
            return .incomplete
        }
        if headEnd + 4 - bytes.startIndex > maxHeadSize { throw .headTooLarge }

        var lines = split(bytes[start..<headEnd + 2], separator: crlf)
        let requestLine = lines.removeFirst()
        var request = try parseRequestLine(requestLine)
        for line in lines {
            let (name, value) = try parseHeaderLine(line)
            request.headers.add(name: name, value: value)
        }
        try checkFraming(&request)
        return .complete(request, headLength: headEnd + 4 - bytes.startIndex)
    }

    /// Refuses, before a head is complete, what can never become valid, so
    /// that a TLS ClientHello or other binary gets 400 at once rather than
    /// at the head timeout: a method byte that is no token byte, a control
    /// byte anywhere (but tab in a field and CR before LF), a request line
    /// not of the form `token SP target SP HTTP/d.d`, a folded field line.
    /// Errors are those the whole head would get; a version of another major
    /// number (505) waits for the whole head.
    private static func refuseEarly(_ head: ArraySlice<UInt8>) throws(HTTPRequestError) {
        var index = head.startIndex
        var part = 0, partLength = 0  // 0 method, 1 target, 2 version
        requestLine: while index < head.endIndex {
            let byte = head[index]
            index += 1
            switch byte {
            case cr:
                // A lone CR first may yet be the start of an empty line (§2.2).
                if part == 0, partLength == 0, index == head.endIndex { return }
                guard part == 2, partLength == 8 else { throw .malformedRequestLine }
                if index < head.endIndex, head[index] != lf { throw .malformedRequestLine }
                index += 1
                break requestLine
            case space:
                guard part < 2, partLength > 0 else { throw .malformedRequestLine }
                part += 1
                partLength = 0
            default:
                let fits = switch part {
                case 0: isTokenByte(byte)
                case 1: byte > 0x20 && byte < 0x7F
                default: versionByteFits(byte, at: partLength)
                }
                guard fits else { throw .malformedRequestLine }
                partLength += 1
            }
        }
        var lineStart = true
        while index < head.endIndex {
            let byte = head[index]
            index += 1
            if lineStart, byte == space || byte == tab { throw .obsoleteLineFolding }
            lineStart = false
            if byte == cr {
                if index < head.endIndex {
                    guard head[index] == lf else { throw .malformedHeader }
                    index += 1
                    lineStart = true
                }
            } else if (byte < 0x20 && byte != tab) || byte == 0x7F {
                throw .malformedHeader
            }
        }
    }

    /// Whether `byte` may stand at `position` of `HTTP/d.d`.
    private static func versionByteFits(_ byte: UInt8, at position: Int) -> Bool {
        switch position {
        case 0..<5: byte == httpSlash[position]
        case 5, 7: digitValue(byte) != nil
        case 6: byte == UInt8(ascii: ".")
        default: false
        }
    }

    private static func parseRequestLine(_ line: ArraySlice<UInt8>) throws(HTTPRequestError) -> HTTPRequest {
        let parts = line.split(separator: space, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformedRequestLine }
        let (method, target, version) = (parts[0], parts[1], parts[2])
        guard !method.isEmpty, method.allSatisfy(isTokenByte) else { throw .malformedRequestLine }
        // Printable ASCII only: no whitespace, no controls, no raw UTF-8.
        guard !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .malformedRequestLine }
        return HTTPRequest(method: ascii(method), target: ascii(target), version: try parseVersion(version))
    }

    private static func parseVersion(_ bytes: ArraySlice<UInt8>) throws(HTTPRequestError) -> HTTPVersion {
        let version = Array(bytes)
        guard version.count == 8, version.starts(with: Array("HTTP/".utf8)), version[6] == UInt8(ascii: "."),
              let major = digitValue(version[5]), let minor = digitValue(version[7]) else { throw .malformedRequestLine }
        guard major == 1 else { throw .unsupportedVersion(ascii(bytes)) }
        // A higher 1.x minor is answered as 1.1 (RFC 9110 §6.2).
        return HTTPVersion(major: 1, minor: min(minor, 1))
    }

    private static func parseHeaderLine(_ line: ArraySlice<UInt8>) throws(HTTPRequestError) -> (String, String) {
        if let first = line.first, first == space || first == tab { throw .obsoleteLineFolding }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw .malformedHeader }
        let name = line[..<colon]
        // Whitespace before the colon must be rejected (RFC 9112 §5.1).
        guard !name.isEmpty, name.allSatisfy(isTokenByte) else { throw .malformedHeader }
        let value = line[(colon + 1)...]
        // Field content: visible ASCII, obs-text, spaces and tabs; no other controls.
        guard value.allSatisfy({ $0 == tab || ($0 >= 0x20 && $0 != 0x7F) }) else { throw .malformedHeader }
        return (ascii(name), String(decoding: value, as: UTF8.self).trimmingWhitespace())
    }

    private static func checkFraming(_ request: inout HTTPRequest) throws(HTTPRequestError) {
        if request.version == .http1_1, request.headers.values(for: "Host").count != 1 {
            throw .missingOrRepeatedHost
        }
        if !request.headers.values(for: "Transfer-Encoding").isEmpty { throw .transferEncodingNotSupported }
        let lengths = request.headers.values(for: "Content-Length")
        guard let first = lengths.first else { return }
        guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.allSatisfy({ digitValue($0) != nil })
        else { throw .invalidContentLength }
        // Absurd lengths saturate; the server refuses anything past its drain limit anyway.
        request.contentLength = first.count > 18 ? Int.max : Int(first)!
    }

    // MARK: bytes

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
    private static let crlf: [UInt8] = [cr, lf]
    private static let crlfcrlf: [UInt8] = [cr, lf, cr, lf]
    private static let httpSlash = Array("HTTP/".utf8)

    /// tchar from RFC 9110 §5.6.2.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    private static func digitValue(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }

    private static func ascii(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    private static func firstIndex(of pattern: [UInt8], in bytes: ArraySlice<UInt8>) -> Int? {
        guard bytes.count >= pattern.count else { return nil }
        return (bytes.startIndex...(bytes.endIndex - pattern.count)).first { bytes[$0..<$0 + pattern.count].elementsEqual(pattern) }
    }

    /// Splits `bytes`, which ends in `separator`, into the lines between separators.
    private static func split(_ bytes: ArraySlice<UInt8>, separator: [UInt8]) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var rest = bytes
        while let end = firstIndex(of: separator, in: rest) {
            lines.append(rest[..<end])
            rest = rest[(end + separator.count)...]
        }
        return lines
    }
}

/// Why a request head was refused; each maps to the status the client gets.
public enum HTTPRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    case bareLineFeed
    case malformedRequestLine
    case unsupportedVersion(String)
    case malformedHeader
    case obsoleteLineFolding
    case missingOrRepeatedHost
    case invalidContentLength
    case transferEncodingNotSupported
    case requestLineTooLong
    case headTooLarge

    public var status: Int {
        switch self {
        case .unsupportedVersion: 505
        case .transferEncodingNotSupported: 501
        case .requestLineTooLong: 414
        case .headTooLarge: 431
        default: 400
        }
    }

    public var description: String {
        switch self {
        case .bareLineFeed: "line ending without CR"
        case .malformedRequestLine: "malformed request line"
        case .unsupportedVersion(let version): "unsupported HTTP version \(version)"
        case .malformedHeader: "malformed header field"
        case .obsoleteLineFolding: "obsolete line folding in header"
        case .missingOrRepeatedHost: "HTTP/1.1 request needs exactly one Host header"
        case .invalidContentLength: "invalid Content-Length"
        case .transferEncodingNotSupported: "request bodies with Transfer-Encoding are not supported"
        case .requestLineTooLong: "request line too long"
        case .headTooLarge: "request head too large"
        }
    }
}
