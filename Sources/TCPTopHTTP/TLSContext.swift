import CTCPTop
import Glibc

/// The listener's TLS settings made into an OpenSSL SSL_CTX, as
/// exporter-toolkit applies them to Go's tls.Config: versions, TLS <= 1.2
/// cipher suites (Go ignores TLS 1.3 ones there), curves, the client
/// certificate policy. Each new connection takes the context in force;
/// a rotated certificate is a new context (see `TLSServerContextSource`).
public final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer
    let settings: TLSSettings
    /// Read by the verify callback through the SSL_CTX's app data.
    private let policy: ClientCertificatePolicy

    /// Reads the certificate, key and client CA now; a problem is one line
    /// naming the file, e.g. `cert_file /etc/x.crt: No such file or directory`.
    public init(_ settings: TLSSettings) throws(TLSError) {
        ignoreSIGPIPE()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("SSL_CTX_new: " + openSSLErrors()) }
        let policy = ClientCertificatePolicy(settings)
        do {
            try Self.configure(ctx, settings)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.ctx = ctx
        self.settings = settings
        self.policy = policy
        SSL_CTX_set_ex_data(ctx, 0, Unmanaged.passUnretained(policy).toOpaque())
        if settings.clientAuth != .noClientCert {
            let mode = SSL_VERIFY_PEER | (settings.clientAuth.requiresCertificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0)
            SSL_CTX_set_verify(ctx, mode, verifyClientCertificate)
        }
    }

    deinit { SSL_CTX_free(ctx) }

    private static func configure(_ ctx: OpaquePointer, _ settings: TLSSettings) throws(TLSError) {
        tcptop_ssl_ctx_set_defaults(ctx, settings.preferServerCipherSuites ? 1 : 0)
        var minimum = settings.minVersion
        let olderSuites = settings.cipherSuites.filter { !$0.tls13 }
        if !settings.cipherSuites.isEmpty {
            if olderSuites.isEmpty {
                minimum = .tls13  // Go: no suite left for TLS <= 1.2, so only TLS 1.3 can be agreed
            } else if SSL_CTX_set_cipher_list(ctx, olderSuites.map(\.openSSLName).joined(separator: ":")) != 1 {
                throw TLSError("cipher_suites: " + openSSLErrors())
            }
        }
        guard tcptop_ssl_ctx_set_proto_versions(ctx, Int32(minimum.wireVersion), Int32(settings.maxVersion.wireVersion)) == 1 else {
            throw TLSError("min_version/max_version: " + openSSLErrors())
        }
        if !settings.curvePreferences.isEmpty,
           tcptop_ssl_ctx_set_groups(ctx, settings.curvePreferences.map(\.openSSLGroup).joined(separator: ":")) != 1 {
            throw TLSError("curve_preferences: " + openSSLErrors())
        }
        try checkReadable(settings.certFile, key: "cert_file")
        try checkReadable(settings.keyFile, key: "key_file")
        guard SSL_CTX_use_certificate_chain_file(ctx, settings.certFile) == 1 else {
            throw TLSError("cert_file \(settings.certFile): " + openSSLErrors())
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, settings.keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("key_file \(settings.keyFile): " + openSSLErrors())
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError("key_file \(settings.keyFile) does not match cert_file \(settings.certFile)")
        }
        if let caFile = settings.clientCAFile {
            try checkReadable(caFile, key: "client_ca_file")
            guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1, let names = SSL_load_client_CA_file(caFile) else {
                throw TLSError("client_ca_file \(caFile): " + openSSLErrors())
            }
            SSL_CTX_set_client_CA_list(ctx, names)
        }
        // Verified clients may resume sessions; OpenSSL refuses that without an id context.
        let id: [UInt8] = Array("tcptop-exporter".utf8)
        SSL_CTX_set_session_id_context(ctx, id, UInt32(id.count))
    }
}

/// The client's side: the CA that signs the server's certificate (else the
/// system's), and a client certificate when the server asks for one.
public struct TLSClientSettings: Equatable, Sendable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var minVersion: TLSVersion = .tls12
    public var maxVersion: TLSVersion = .tls13

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer

    public init(_ settings: TLSClientSettings) throws(TLSError) {
        ignoreSIGPIPE()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError("SSL_CTX_new: " + openSSLErrors()) }
        do {
            try Self.configure(ctx, settings)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.ctx = ctx
    }

    deinit { SSL_CTX_free(ctx) }

    private static func configure(_ ctx: OpaquePointer, _ settings: TLSClientSettings) throws(TLSError) {
        tcptop_ssl_ctx_set_defaults(ctx, 0)
        _ = tcptop_ssl_ctx_set_proto_versions(ctx, Int32(settings.minVersion.wireVersion), Int32(settings.maxVersion.wireVersion))
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        if let caFile = settings.caFile {
            try checkReadable(caFile, key: "CA file")
            guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else { throw TLSError("CA file \(caFile): " + openSSLErrors()) }
        } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
            throw TLSError("the system's CA certificates: " + openSSLErrors())
        }
        guard (settings.certFile == nil) == (settings.keyFile == nil) else {
            throw TLSError("a client certificate needs both a certificate file and a key file")
        }
        if let certFile = settings.certFile, let keyFile = settings.keyFile {
            try checkReadable(certFile, key: "certificate file")
            try checkReadable(keyFile, key: "key file")
            guard SSL_CTX_use_certificate_chain_file(ctx, certFile) == 1 else {
                throw TLSError("certificate file \(certFile): " + openSSLErrors())
            }
            guard SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
                throw TLSError("key file \(keyFile): " + openSSLErrors())
            }
        }
    }
}

extension TLSClientAuth {
    var requiresCertificate: Bool { self == .requireAnyClientCert || self == .requireAndVerifyClientCert }
}

/// What a client certificate must be, for the verify callback.
final class ClientCertificatePolicy: Sendable {
    let verifies: Bool
    let allowedSANs: Set<String>

    init(_ settings: TLSSettings) {
        verifies = settings.clientAuth.verifies
        allowedSANs = Set(settings.clientAllowedSANs)
    }

    /// exporter-toolkit's rule: one of the leaf's DNS, IP, e-mail or URI names is allowed.
    func allows(_ certificate: OpaquePointer) -> Bool {
        var names = [CChar](repeating: 0, count: 8192)
        let length = tcptop_x509_sans(certificate, &names, names.count)
        return names[..<length].split(separator: 0).contains { name in
            allowedSANs.contains(String(decoding: name.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }
}

/// OpenSSL's verdict on each certificate of the client's chain (`preverified`)
/// is kept when the policy verifies and ignored when it only asks for a
/// certificate (Go's RequestClientCert, RequireAnyClientCert); the leaf
/// must then carry an allowed SAN. A refusal ends the handshake with an alert.
private let verifyClientCertificate: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverified, store in
    guard let store, let ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let ctx = SSL_get_SSL_CTX(OpaquePointer(ssl)), let raw = SSL_CTX_get_ex_data(ctx, 0) else { return 0 }
    let policy = Unmanaged<ClientCertificatePolicy>.fromOpaque(raw).takeUnretainedValue()
    guard !policy.verifies || preverified == 1 else { return 0 }
    if X509_STORE_CTX_get_error_depth(store) == 0, !policy.allowedSANs.isEmpty {
        guard let leaf = X509_STORE_CTX_get_current_cert(store), policy.allows(leaf) else {
            X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
            return 0
        }
    }
    return 1
}

private func checkReadable(_ path: String, key: String) throws(TLSError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TLSError("cannot read \(key) \(path): \(String(cString: strerror(errno)))") }
    close(fd)
}

/// OpenSSL writes to sockets with write(2), not send(MSG_NOSIGNAL): a peer
/// gone would raise SIGPIPE, which kills a process by default.
private func ignoreSIGPIPE() {
    _ = signalIgnored
}

private let signalIgnored: Void = {
    signal(SIGPIPE, SIG_IGN)
}()
