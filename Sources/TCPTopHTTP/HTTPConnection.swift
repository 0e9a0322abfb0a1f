/// Serves one client connection, on its own thread: read a head, answer it,
/// and repeat while the connection is kept alive. Every wait has a deadline.
struct HTTPConnection {
    let socket: HTTPSocket
    let configuration: HTTPServer.Configuration
    let server: HTTPServer
    let handler: HTTPHandler

    /// Returns when the connection should be closed (the caller closes it).
    func run() {
        var buffer: [UInt8] = []
        // A new client gets the head timeout to start talking; a kept-alive one the idle timeout.
        var waitForRequest = configuration.headReadTimeout
        while true {
            if buffer.isEmpty {
                // Idle, end of stream or stop: close without a word, as nothing was asked.
                guard case .read = socket.read(into: &buffer, until: .now + waitForRequest, watchStop: true) else { return }
            }
            let deadline = ContinuousClock.now + configuration.headReadTimeout
            guard let request = readRequest(from: &buffer, until: deadline),
                  discardBody(of: request, from: &buffer, until: deadline) else { return }

            let response = server.admit { handler(request) }
                ?? .text(503, "Too many concurrent requests, try again later.\n")
            let keepAlive = request.wantsKeepAlive && !server.isStopping
            guard send(response, for: request, keepAlive: keepAlive), keepAlive else { return }
            waitForRequest = configuration.idleTimeout
        }
    }

    /// Reads until a full head is in `buffer` and removes it from there. On a
    /// bad or too slow head, answers with an error and returns nil.
    private func readRequest(from buffer: inout [UInt8], until deadline: ContinuousClock.Instant) -> HTTPRequest? {
        while true {
            do {
                if case .complete(let request, let headLength) = try HTTPRequestParser.parse(buffer[...], maxHeadSize: configuration.maxHeadSize) {
                    buffer.removeFirst(headLength)
                    return request
                }
            } catch {
                _ = send(.text(error.status, "\(error.description)\n"), for: nil, keepAlive: false)
                return nil
            }
            switch socket.read(into: &buffer, until: deadline, watchStop: true) {
            case .read: continue
            case .timedOut:
                // Slow or stalled clients lose their connection; others never waited on them.
                _ = send(.text(408, "Request head not received in time.\n"), for: nil, keepAlive: false)
                return nil
            case .endOfStream, .stopped, .failed: return nil
            }
        }
    }

    /// Reads and drops a small Content-Length body so the connection stays in
    /// step; refuses big ones (413) rather than spend time reading them.
    private func discardBody(of request: HTTPRequest, from buffer: inout [UInt8], until deadline: ContinuousClock.Instant) -> Bool {
        guard request.contentLength <= configuration.maxDiscardedBodySize else {
            _ = send(.text(413, "Request bodies are not accepted.\n"), for: request, keepAlive: false)
            return false
        }
        var remaining = request.contentLength
        while true {
            let taken = min(remaining, buffer.count)
            buffer.removeFirst(taken)
            remaining -= taken
            if remaining == 0 { return true }
            guard case .read = socket.read(into: &buffer, until: deadline, watchStop: true) else { return false }
        }
    }

    /// Writes a response; when the connection ends after it, lingers so the
    /// client reads it whole. False when the client could not be written to.
    private func send(_ response: HTTPResponse, for request: HTTPRequest?, keepAlive: Bool) -> Bool {
        let encoder = HTTPResponseEncoder(gzipLevel: configuration.gzipLevel)
        let (head, body) = encoder.encode(response, for: request, keepAlive: keepAlive)
        let deadline = ContinuousClock.now + configuration.writeTimeout
        let written = socket.write(head, until: deadline, more: !body.isEmpty)
            && (body.isEmpty || socket.write(body, until: deadline))
        if written && !keepAlive { socket.linger() }
        return written
    }
}
