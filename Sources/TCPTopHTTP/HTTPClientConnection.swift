import Glibc

/// One client connection: requests (several in turn, kept alive), raw
/// bytes, and replies read one at a time. Not thread-safe; closed on deinit.
public final class HTTPClientConnection {
    public let fd: Int32
    public let host: String
    public let port: UInt16
    public let options: HTTPClient.Options
    /// False once a reply ended the connection (close-delimited, `Connection: close`).
    public private(set) var isReusable = true
    /// `TLSv1.3`, `TLSv1.2`; nil over plain HTTP.
    public var tlsVersion: String? {
        if case .tls(let session) = transport { return session.protocolVersion }
        return nil
    }
    private let transport: HTTPTransport

    /// Bytes received and not yet consumed: `buffer[start...]`.
    private var buffer: [UInt8] = []
    private var start = 0
    private var scratch = [UInt8](repeating: 0, count: 256 << 10)

    private var authority: String { HTTPURL(host: host, port: port).authority }

    convenience init(host: String, port: UInt16, tls: Bool, options: HTTPClient.Options, deadline: ContinuousClock.Instant)
        throws(HTTPClientError)
    {
        let label = HTTPURL(host: host, port: port).authority
        let fd = try HTTPClientSocket.connect(host: host, port: port, label: label, options: options, deadline: deadline)
        var session: TLSSession?
        if tls {
            do {
                session = try TLSSession(client: try options.tls ?? TLSClientContext(TLSClientSettings()), fd: fd, host: host)
            } catch {
                close(fd)
                throw HTTPClientError(.tls, "TLS with \(label): \(error)")
            }
        }
        self.init(fd: fd, host: host, port: port, options: options, transport: session.map { .tls($0) })
        if let session { try handshake(session, deadline: deadline) }
    }

    /// Over a connected, non-blocking stream socket it then owns (the fuzz target uses a socketpair).
    init(fd: Int32, host: String, port: UInt16, options: HTTPClient.Options, transport: HTTPTransport? = nil) {
        self.fd = fd
        self.host = host
        self.port = port
        self.options = options
        self.transport = transport ?? .plain(fd)
    }

    private func handshake(_ session: TLSSession, deadline: ContinuousClock.Instant) throws(HTTPClientError) {
        while true {
            switch session.handshake() {
            case .transferred: return
            case .wantRead: try wait(for: POLLIN, until: deadline, doing: "in the TLS handshake")
            case .wantWrite: try wait(for: POLLOUT, until: deadline, doing: "in the TLS handshake")
            case .closed, .error: throw HTTPClientError(.tls, "TLS handshake with \(authority): the server closed the connection")
            case .failed(let reason):
                let refused = session.verifyProblem.map { " (server certificate: \($0))" } ?? ""
                throw HTTPClientError(.tls, "TLS handshake with \(authority): \(reason)\(refused)")
            }
        }
    }

    deinit { close(fd) }

    // MARK: Sending

    /// Sends a request, then reads its reply. Adds `Host`, `Content-Length`
    /// for a body, and `Accept-Encoding: gzip` when the options ask for it,
    /// unless `headers` has them.
    public func request(_ method: String = "GET", _ path: String, headers: HTTPHeaders = [:], body: [UInt8] = [],
                        deadline: ContinuousClock.Instant? = nil) throws(HTTPClientError) -> HTTPClientReply
    {
        let deadline = deadline ?? .now + options.timeout
        var all = HTTPHeaders()
        if headers["Host"] == nil { all.add(name: "Host", value: authority) }
        if options.acceptGzip && headers["Accept-Encoding"] == nil { all.add(name: "Accept-Encoding", value: "gzip") }
        if !body.isEmpty && headers["Content-Length"] == nil { all.add(name: "Content-Length", value: String(body.count)) }
        for field in headers { all.add(name: field.name, value: field.value) }
        // Nothing may end the request line or a field early (CR, LF, spaces in the line).
        let isVisible = { (text: String) in !text.isEmpty && text.utf8.allSatisfy { $0 > 32 && $0 < 127 } }
        guard isVisible(method), isVisible(path),
              all.allSatisfy({ isVisible($0.name) && !$0.name.contains(":") && !$0.value.utf8.contains(where: { $0 < 32 && $0 != 9 }) })
        else {
            let line = HTTPReplyParser.printable("\(method) \(path)".utf8.prefix(80))
            throw HTTPClientError(.badRequest, "request \(line): a method, path or header has a forbidden character")
        }
        var head = "\(method) \(path) HTTP/1.1\r\n"
        for field in all { head += "\(field.name): \(field.value)\r\n" }
        try send(Array((head + "\r\n").utf8) + body, deadline: deadline)
        return try readReply(to: method, deadline: deadline)
    }

    /// Sends `bytes` exactly as given (tests send malformed requests).
    public func send(_ bytes: [UInt8], deadline: ContinuousClock.Instant? = nil) throws(HTTPClientError) {
        let deadline = deadline ?? .now + options.timeout
        var offset = 0
        while offset < bytes.count {
            switch bytes.withUnsafeBytes({ transport.send(UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
            case .transferred(let sent): offset += sent
            case .wantWrite: try wait(for: POLLOUT, until: deadline, doing: "sending the request")
            case .wantRead: try wait(for: POLLIN, until: deadline, doing: "sending the request")
            case .closed: throw failure(EPIPE, doing: "sending the request")
            case .error(let code): throw failure(code, doing: "sending the request")
            case .failed(let reason): throw tlsFailure(reason, doing: "sending the request")
            }
        }
    }

    public func send(_ text: String, deadline: ContinuousClock.Instant? = nil) throws(HTTPClientError) {
        try send(Array(text.utf8), deadline: deadline)
    }

    // MARK: Receiving

    /// Reads one reply to a request made with `method` (HEAD has no body).
    /// Interim 1xx replies are skipped.
    public func readReply(to method: String = "GET", deadline: ContinuousClock.Instant? = nil)
        throws(HTTPClientError) -> HTTPClientReply
    {
        let deadline = deadline ?? .now + options.timeout
        while true {
            let head = try HTTPReplyParser.parseHead(try readHead(deadline: deadline))
            if head.status >= 100 && head.status < 200 && head.status != 101 { continue }
            let framing = try HTTPReplyParser.framing(of: head, method: method)
            var body: [UInt8]
            switch framing {
            case .none: body = []
            case .length(let length): body = try readBody(length: length, deadline: deadline)
            case .chunked: body = try readChunkedBody(deadline: deadline)
            case .untilClose: body = try readBodyUntilClose(deadline: deadline)
            }
            let keepsOpen = HTTPReplyParser.keepsConnectionOpen(head, framing: framing)
            if !keepsOpen { isReusable = false }
            if options.acceptGzip, framing != .none,
               let coding = head.headers["Content-Encoding"]?.lowercased(), coding != "identity"
            {
                guard coding == "gzip" || coding == "x-gzip" else {
                    throw HTTPClientError(.badReply, "unsupported Content-Encoding \"\(HTTPReplyParser.printable(coding.utf8.prefix(40)))\"")
                }
                body = try HTTPGunzip.inflate(body, maxBytes: options.maxBodyBytes)
            }
            return HTTPClientReply(version: head.version, status: head.status, reason: head.reason, headers: head.headers,
                                   body: body, keepsConnectionOpen: keepsOpen)
        }
    }

    /// Whatever arrives next, unparsed (buffered bytes first); empty at the end of the stream.
    public func readSome(deadline: ContinuousClock.Instant? = nil) throws(HTTPClientError) -> [UInt8] {
        if start == buffer.count {
            guard try fill(until: deadline ?? .now + options.timeout, doing: "reading") else { return [] }
        }
        defer { consume(buffer.count - start) }
        return Array(buffer[start...])
    }

    /// Bytes received and not yet read as a reply.
    public var hasBufferedBytes: Bool { start < buffer.count }

    /// True when the peer closed or reset the connection, with nothing left
    /// to read, within `timeout` (default: the options' timeout).
    public func isClosedByPeer(within timeout: Duration? = nil) -> Bool {
        guard start == buffer.count else { return false }
        do {
            return try !fill(until: .now + (timeout ?? options.timeout), doing: "reading")
        } catch {
            switch error.kind {
            case .closed, .io: return true
            default: return false
            }
        }
    }

    /// The head up to and without its empty line, consumed from the buffer.
    private func readHead(deadline: ContinuousClock.Instant) throws(HTTPClientError) -> ArraySlice<UInt8> {
        var scanned = start
        while true {
            if let end = buffer[scanned...].firstRange(of: [13, 10, 13, 10]) {
                let head = buffer[start..<end.lowerBound]
                guard head.count <= options.maxHeadBytes else { throw headTooLarge() }
                consume(end.upperBound - start)
                return head
            }
            guard buffer.count - start <= options.maxHeadBytes else { throw headTooLarge() }
            scanned = max(start, buffer.count - 3)
            let hadBytes = buffer.count > start
            guard try fill(until: deadline, doing: "reading the reply") else {
                throw HTTPClientError(.closed, hadBytes ? "connection closed in the middle of the reply head"
                                                        : "connection closed before a reply")
            }
        }
    }

    private func readBody(length: Int, deadline: ContinuousClock.Instant) throws(HTTPClientError) -> [UInt8] {
        guard length <= options.maxBodyBytes else { throw bodyTooLarge() }
        let buffered = min(length, buffer.count - start)
        var body = Array(buffer[start..<start + buffered])
        consume(buffered)
        guard body.count < length else { return body }
        // Straight from the socket into the body: large scrapes are not copied twice.
        body.reserveCapacity(length)
        while body.count < length {
            let wanted = min(scratch.count, length - body.count)
            switch scratch.withUnsafeMutableBytes({ transport.receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<wanted])) }) {
            case .transferred(let count): body += scratch[..<count]
            case .closed:
                isReusable = false
                throw HTTPClientError(.closed, "reply cut short (\(body.count) of \(length) body bytes)")
            case .error(let code): throw failure(code, doing: "reading the reply")
            case .wantRead: try wait(for: POLLIN, until: deadline, doing: "reading the reply")
            case .wantWrite: try wait(for: POLLOUT, until: deadline, doing: "reading the reply")
            case .failed(let reason): throw tlsFailure(reason, doing: "reading the reply")
            }
        }
        return body
    }

    private func readChunkedBody(deadline: ContinuousClock.Instant) throws(HTTPClientError) -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let size = try HTTPReplyParser.chunkSize(line: try readLine(deadline: deadline))
            if size == 0 { break }
            guard size <= options.maxBodyBytes - body.count else { throw bodyTooLarge() }
            while buffer.count - start < size + 2 {
                try fillOrFail(deadline: deadline, "connection closed in the middle of the chunked body")
            }
            body += buffer[start..<start + size]
            guard buffer[start + size] == 13 && buffer[start + size + 1] == 10 else {
                throw HTTPClientError(.badReply, "bad chunked body: a chunk does not end with CRLF")
            }
            consume(size + 2)
        }
        // Trailer fields, up to the empty line: read and dropped.
        var trailerBytes = 0
        while true {
            let line = try readLine(deadline: deadline)
            if line.isEmpty { return body }
            trailerBytes += line.count
            guard trailerBytes <= options.maxHeadBytes else { throw headTooLarge() }
        }
    }

    private func readBodyUntilClose(deadline: ContinuousClock.Instant) throws(HTTPClientError) -> [UInt8] {
        while try fill(until: deadline, doing: "reading the reply") {
            guard buffer.count - start <= options.maxBodyBytes else { throw bodyTooLarge() }
        }
        defer { consume(buffer.count - start) }
        return Array(buffer[start...])
    }

    /// One CRLF-ended line of the chunked framing, without its CRLF.
    private func readLine(deadline: ContinuousClock.Instant) throws(HTTPClientError) -> ArraySlice<UInt8> {
        while true {
            if let end = buffer[start...].firstRange(of: [13, 10]) {
                let line = buffer[start..<end.lowerBound]
                consume(end.upperBound - start)
                return line
            }
            guard buffer.count - start <= 4096 else {
                throw HTTPClientError(.badReply, "bad chunked body: a line longer than 4096 bytes")
            }
            try fillOrFail(deadline: deadline, "connection closed in the middle of the chunked body")
        }
    }

    // MARK: The socket

    private func fillOrFail(deadline: ContinuousClock.Instant, _ closedText: String) throws(HTTPClientError) {
        guard try fill(until: deadline, doing: "reading the reply") else {
            isReusable = false
            throw HTTPClientError(.closed, closedText)
        }
    }

    /// Appends what the socket has (waiting for it); false at the end of the stream.
    private func fill(until deadline: ContinuousClock.Instant, doing what: String) throws(HTTPClientError) -> Bool {
        while true {
            switch scratch.withUnsafeMutableBytes({ transport.receive(into: $0) }) {
            case .transferred(let count):
                buffer += scratch[..<count]
                return true
            case .closed:
                isReusable = false
                return false
            case .error(let code): throw failure(code, doing: what)
            case .wantRead: try wait(for: POLLIN, until: deadline, doing: what)
            case .wantWrite: try wait(for: POLLOUT, until: deadline, doing: what)
            case .failed(let reason): throw tlsFailure(reason, doing: what)
            }
        }
    }

    private func consume(_ count: Int) {
        start += count
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.count <= 1 << 20)
            start = 0
        } else if start > 1 << 16 && start > buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
    }

    private func wait(for event: Int32, until deadline: ContinuousClock.Instant, doing what: String) throws(HTTPClientError) {
        try HTTPClientSocket.wait(fd, for: event, until: deadline, options: options, doing: what)
    }

    private func failure(_ code: Int32, doing what: String) -> HTTPClientError {
        isReusable = false
        let kind: HTTPClientError.Kind = code == ECONNRESET || code == EPIPE ? .closed : .io(errno: code)
        let peer = what.hasPrefix("sending") ? "to \(authority)" : "from \(authority)"
        return HTTPClientError(kind, "\(what) \(peer): \(String(cString: strerror(code)))")
    }

    private func tlsFailure(_ reason: String, doing what: String) -> HTTPClientError {
        isReusable = false
        return HTTPClientError(.tls, "\(what) from \(authority): TLS: \(reason)")
    }

    private func headTooLarge() -> HTTPClientError {
        isReusable = false
        return HTTPClientError(.tooLarge, "reply head larger than the limit of \(byteCountText(options.maxHeadBytes))")
    }

    private func bodyTooLarge() -> HTTPClientError {
        isReusable = false
        return HTTPClientError(.tooLarge, "reply body larger than the limit of \(byteCountText(options.maxBodyBytes))")
    }
}
