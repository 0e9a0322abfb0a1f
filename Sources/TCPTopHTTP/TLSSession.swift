import CTCPTop
import Glibc

/// One TLS connection (an OpenSSL `SSL` on a non-blocking socket): the
/// handshake, reads and writes, each returning at once with what it needs
/// next. Used by one thread at a time (the loop, then a worker, then the
/// loop: handed over under the server's locks). Frees the SSL, not the fd.
final class TLSSession: @unchecked Sendable {
    let fd: Int32
    private let ssl: OpaquePointer
    /// Keeps the SSL_CTX's Swift side (the client certificate policy the
    /// verify callback reads) alive as long as this connection.
    private let context: AnyObject
    private(set) var handshakeDone = false
    /// The peer spoke plain HTTP to a TLS port (OpenSSL recognises a request line).
    private(set) var peerSentPlainHTTP = false

    init?(server context: TLSServerContext, fd: Int32) {
        guard let ssl = SSL_new(context.ctx) else { return nil }
        self.ssl = ssl
        self.fd = fd
        self.context = context
        SSL_set_fd(ssl, fd)
        SSL_set_accept_state(ssl)
    }

    /// A client session verifying that the server's certificate names `host` (a name or an IP).
    init(client context: TLSClientContext, fd: Int32, host: String) throws(TLSError) {
        guard let ssl = SSL_new(context.ctx) else { throw TLSError("SSL_new: " + openSSLErrors()) }
        self.ssl = ssl
        self.fd = fd
        self.context = context
        SSL_set_fd(ssl, fd)
        SSL_set_connect_state(ssl)
        if isIPAddress(host) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
        } else {
            _ = tcptop_ssl_set_host_name(ssl, host)  // SNI
            SSL_set1_host(ssl, host)
        }
    }

    deinit { SSL_free(ssl) }

    /// `.transferred(0)` once the handshake is done.
    func handshake() -> HTTPIOResult {
        if handshakeDone { return .transferred(0) }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeDone = true
            return .transferred(0)
        }
        return outcome(result)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> HTTPIOResult {
        ERR_clear_error()
        let result = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if result > 0 {
            handshakeDone = true
            return .transferred(Int(result))
        }
        return outcome(result)
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> HTTPIOResult {
        guard !bytes.isEmpty else { return .transferred(0) }
        ERR_clear_error()
        let result = SSL_write(ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        if result > 0 { return .transferred(Int(result)) }
        return outcome(result)
    }

    /// Bytes OpenSSL holds and epoll cannot see: decrypted and not yet
    /// read, or received and not yet decrypted.
    var pending: Bool { SSL_has_pending(ssl) == 1 }

    /// close_notify, without waiting: the peer can tell our end from a cut.
    func sendCloseNotify() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// `TLSv1.3`, as OpenSSL names the version in use.
    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// Why the peer's certificate was refused, when it was (client side).
    var verifyProblem: String? {
        let result = SSL_get_verify_result(ssl)
        return result == X509_V_OK ? nil : String(cString: X509_verify_cert_error_string(result))
    }

    private func outcome(_ result: Int32) -> HTTPIOResult {
        let code = errno
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            ERR_clear_error()
            return code == 0 ? .closed : .error(code)
        default:
            let first = ERR_peek_error()
            if tcptop_ssl_error_is_http_request(first) != 0 { peerSentPlainHTTP = true }
            return .failed(openSSLErrors())
        }
    }
}

/// A TLS problem in one line (a file, a setting, a handshake).
public struct TLSError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// OpenSSL's error queue (this thread's) as one line, then emptied.
func openSSLErrors() -> String {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        if let reason = ERR_reason_error_string(code) {
            reasons.append(String(cString: reason))
        } else {
            var text = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &text, text.count)
            reasons.append(text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
    }
    return reasons.isEmpty ? "unknown TLS error" : reasons.joined(separator: "; ")
}

func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr(), v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
}
