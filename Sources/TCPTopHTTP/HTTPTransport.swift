import CTCPTop
import Glibc

/// What one read or write on a connection did.
enum HTTPIOResult {
    /// This many bytes moved (0 only for a finished handshake).
    case transferred(Int)
    /// Nothing now: wait until the socket is readable (TLS may need to read to write, too).
    case wantRead
    /// Nothing now: wait until the socket is writable.
    case wantWrite
    /// The peer ended the stream.
    case closed
    /// The socket failed: this errno (ECONNRESET, EPIPE...).
    case error(Int32)
    /// A TLS failure, said in one line.
    case failed(String)
}

/// The bytes of one connection, as they are or through TLS. The event loop
/// (handshake and request head), the worker (the response) and the client
/// all read and write through it, so plain and TLS share every other line.
enum HTTPTransport: Sendable {
    case plain(Int32)
    case tls(TLSSession)

    var fd: Int32 {
        switch self {
        case .plain(let fd): fd
        case .tls(let session): session.fd
        }
    }

    var isTLS: Bool {
        if case .tls = self { return true }
        return false
    }

    /// TLS: decrypted bytes wait in OpenSSL, which epoll cannot see.
    var hasPendingBytes: Bool {
        if case .tls(let session) = self { return session.pending }
        return false
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) -> HTTPIOResult {
        switch self {
        case .plain(let fd):
            let count = recv(fd, buffer.baseAddress, buffer.count, 0)
            if count > 0 { return .transferred(count) }
            if count == 0 { return .closed }
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? .wantRead : .error(errno)
        case .tls(let session):
            return session.read(into: buffer)
        }
    }

    /// MSG_NOSIGNAL: a peer that went away must yield EPIPE, not a SIGPIPE
    /// that kills the daemon. `more`: more follows at once (plain only).
    func send(_ bytes: UnsafeRawBufferPointer, more: Bool = false) -> HTTPIOResult {
        switch self {
        case .plain(let fd):
            let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
            let sent = Glibc.send(fd, bytes.baseAddress, bytes.count, flags)
            if sent >= 0 { return .transferred(sent) }
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? .wantWrite : .error(errno)
        case .tls(let session):
            return session.write(bytes)
        }
    }

    /// The end of what this side sends: TLS's close_notify (when it fits
    /// now), then the TCP half-close.
    func finishSending() {
        if case .tls(let session) = self { session.sendCloseNotify() }
        shutdown(fd, Int32(SHUT_WR))
    }
}
