import CTCPTop
import Glibc
import Logging

/// Writes one response, on a worker thread, before one deadline: the head,
/// then the body whole or as it is produced (gzip streamed; chunked on a
/// kept-alive connection, else ended by the close).
struct HTTPResponder {
    let transport: HTTPTransport
    let configuration: HTTPServer.Configuration
    let logger: Logger

    /// What becomes of the connection after the response.
    enum Outcome: Sendable {
        /// Ready for the next request.
        case keepAlive
        /// Answered in full and half-closed: to linger, then close.
        case linger
        /// Cut short: to be reset.
        case abort
    }

    func respond(_ response: HTTPResponse, to request: HTTPRequest, keepAlive: Bool) -> Outcome {
        let socket = HTTPSocket(transport: transport, deadline: .now + configuration.writeTimeout)
        let encoder = HTTPResponseEncoder(gzipLevel: configuration.gzipLevel)
        switch response.body {
        case .bytes:
            return sendWhole(response, to: request, keepAlive: keepAlive, socket, encoder)
        case .stream(let producer):
            // HTTP/1.0 has no chunked encoding: there the close ends the body.
            let chunked = keepAlive && request.version == .http1_1
            let (head, gzip) = encoder.streamHead(response, for: request, framing: chunked ? .chunked : .close, keepAlive: chunked)
            if request.method == "HEAD" {
                // The head alone; the producer (a kernel read and render, for metrics) never runs.
                guard (try? socket.write(head)) != nil else { return .abort }
                return finished(keepAlive: chunked)
            }
            let writer = HTTPBodyWriter(socket: socket, head: head, chunked: chunked,
                                        gzip: gzip ? HTTPGzipStream(level: configuration.gzipLevel) : nil)
            do {
                try producer { piece in try writer.write(piece) }
                try writer.finish()
                return finished(keepAlive: chunked)
            } catch is HTTPSocket.WriteFailed {
                return .abort
            } catch {
                logger.warning("response to \(request.method) \(request.path) failed: \(error)")
                // Nothing sent yet: the client can still be told.
                guard !writer.sentAnything else { return .abort }
                return sendWhole(.text(500, "The response could not be produced.\n"), to: request, keepAlive: keepAlive, socket, encoder)
            }
        }
    }

    private func sendWhole(_ response: HTTPResponse, to request: HTTPRequest, keepAlive: Bool,
                           _ socket: HTTPSocket, _ encoder: HTTPResponseEncoder) -> Outcome {
        let (head, body) = encoder.encode(response, for: request, keepAlive: keepAlive)
        do {
            try socket.write(head, more: !body.isEmpty)
            if !body.isEmpty { try socket.write(body) }
        } catch {
            return .abort
        }
        return finished(keepAlive: keepAlive)
    }

    /// A connection that ends after this response is half-closed now (the
    /// client sees the end at once); the loop lingers before closing it.
    private func finished(keepAlive: Bool) -> Outcome {
        if keepAlive { return .keepAlive }
        transport.finishSending()
        return .linger
    }
}

/// The sink of a streamed body: frames (and maybe compresses) each piece and
/// writes it out once 64 KiB are gathered, the head first. Holds at most
/// that much besides one piece.
final class HTTPBodyWriter {
    private let socket: HTTPSocket
    private let chunked: Bool
    private let gzip: HTTPGzipStream?
    private var pending: [UInt8]
    /// Whether any byte (of the head, even) may have reached the client.
    private(set) var sentAnything = false
    private static let flushSize = 64 * 1024

    init(socket: HTTPSocket, head: [UInt8], chunked: Bool, gzip: HTTPGzipStream?) {
        self.socket = socket
        self.chunked = chunked
        self.gzip = gzip
        pending = head
        pending.reserveCapacity(Self.flushSize + 1024)
    }

    func write(_ piece: ArraySlice<UInt8>) throws {
        guard !piece.isEmpty else { return }  // an empty chunk would end the body
        if let gzip {
            try gzip.compress(piece, finish: false) { try frame($0) }
        } else {
            try frame(piece)
        }
    }

    func finish() throws {
        if let gzip { try gzip.compress([], finish: true) { try frame($0) } }
        if chunked { pending += Array("0\r\n\r\n".utf8) }
        try flush()
    }

    private func frame(_ data: ArraySlice<UInt8>) throws {
        guard !data.isEmpty else { return }
        if chunked { pending += Array((String(data.count, radix: 16) + "\r\n").utf8) }
        pending += data
        if chunked { pending += [13, 10] }
        if pending.count >= Self.flushSize { try flush() }
    }

    private func flush() throws {
        guard !pending.isEmpty else { return }
        sentAnything = true
        try socket.write(pending)
        pending.removeAll(keepingCapacity: true)
    }
}
