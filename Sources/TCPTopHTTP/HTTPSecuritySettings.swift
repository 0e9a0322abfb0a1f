/// What a `--web.config.file` (the exporter-toolkit web configuration)
/// asks of the HTTP side, as plain values: TCPTopCore reads the YAML into
/// these, the server and `securedHandler` use them without a YAML parser.
public struct HTTPSecuritySettings: Equatable, Sendable {
    /// nil: plain HTTP (exporter-toolkit turns TLS on only when `cert_file`,
    /// `key_file`, `client_ca_file` or `client_auth_type` is given).
    public var tls: TLSSettings?
    /// User name → bcrypt hash; empty: no authentication asked.
    public var basicAuthUsers: [String: String]
    /// Added to every response the handler gives (`http_server_config.headers`).
    public var headers: HTTPHeaders

    public init(tls: TLSSettings? = nil, basicAuthUsers: [String: String] = [:], headers: HTTPHeaders = [:]) {
        self.tls = tls
        self.basicAuthUsers = basicAuthUsers
        self.headers = headers
    }
}

/// `tls_server_config`, with exporter-toolkit's defaults. Paths are absolute
/// or relative to the working directory (a relative path in the file is
/// relative to the file's directory, as in exporter-toolkit, and is joined
/// to it when read).
public struct TLSSettings: Equatable, Sendable {
    public var certFile: String
    public var keyFile: String
    public var clientAuth: TLSClientAuth = .noClientCert
    public var clientCAFile: String?
    /// A verified client certificate must carry one of these (DNS, IP,
    /// e-mail or URI SAN, compared exactly); empty: any.
    public var clientAllowedSANs: [String] = []
    public var minVersion: TLSVersion = .tls12
    public var maxVersion: TLSVersion = .tls13
    /// For TLS 1.2 and older, in preference order; empty: the library's
    /// defaults. Like Go, TLS 1.3 suites listed here do not restrict TLS 1.3.
    public var cipherSuites: [TLSCipherSuite] = []
    /// ECDHE groups in preference order; empty: the library's defaults.
    public var curvePreferences: [TLSCurve] = []
    public var preferServerCipherSuites = true

    public init(certFile: String, keyFile: String) {
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// Go's `tls.ClientAuthType` names, as exporter-toolkit reads them.
public enum TLSClientAuth: String, CaseIterable, Sendable {
    case noClientCert = "NoClientCert"
    case requestClientCert = "RequestClientCert"
    case requireAnyClientCert = "RequireAnyClientCert"
    case verifyClientCertIfGiven = "VerifyClientCertIfGiven"
    case requireAndVerifyClientCert = "RequireAndVerifyClientCert"

    /// Whether a client certificate, when one is presented, is checked against `client_ca_file`.
    public var verifies: Bool { self == .verifyClientCertIfGiven || self == .requireAndVerifyClientCert }
}

public enum TLSVersion: String, CaseIterable, Comparable, Sendable {
    case tls10 = "TLS10", tls11 = "TLS11", tls12 = "TLS12", tls13 = "TLS13"

    /// The protocol version number on the wire (OpenSSL's TLS1_2_VERSION is 0x0303).
    public var wireVersion: UInt16 {
        switch self {
        case .tls10: 0x0301
        case .tls11: 0x0302
        case .tls12: 0x0303
        case .tls13: 0x0304
        }
    }

    public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool { lhs.wireVersion < rhs.wireVersion }
}

/// A cipher suite by Go's name (what the file says) and OpenSSL's.
public struct TLSCipherSuite: Equatable, Sendable {
    /// The IANA name, which Go uses: `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    public var goName: String
    /// For `SSL_CTX_set_cipher_list` (TLS <= 1.2) or, when `tls13`, for `SSL_CTX_set_ciphersuites`.
    public var openSSLName: String
    public var tls13: Bool

    /// What exporter-toolkit accepts: Go's `tls.CipherSuites()` as built into
    /// Debian 12's node_exporter (Go 1.19). The pairs are what
    /// `openssl ciphers -stdname` prints (a test checks them against it).
    public static let all: [TLSCipherSuite] = [
        .init(goName: "TLS_AES_128_GCM_SHA256", openSSLName: "TLS_AES_128_GCM_SHA256", tls13: true),
        .init(goName: "TLS_AES_256_GCM_SHA384", openSSLName: "TLS_AES_256_GCM_SHA384", tls13: true),
        .init(goName: "TLS_CHACHA20_POLY1305_SHA256", openSSLName: "TLS_CHACHA20_POLY1305_SHA256", tls13: true),
        .init(goName: "TLS_RSA_WITH_AES_128_CBC_SHA", openSSLName: "AES128-SHA", tls13: false),
        .init(goName: "TLS_RSA_WITH_AES_256_CBC_SHA", openSSLName: "AES256-SHA", tls13: false),
        .init(goName: "TLS_RSA_WITH_AES_128_GCM_SHA256", openSSLName: "AES128-GCM-SHA256", tls13: false),
        .init(goName: "TLS_RSA_WITH_AES_256_GCM_SHA384", openSSLName: "AES256-GCM-SHA384", tls13: false),
        .init(goName: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", openSSLName: "ECDHE-ECDSA-AES128-SHA", tls13: false),
        .init(goName: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", openSSLName: "ECDHE-ECDSA-AES256-SHA", tls13: false),
        .init(goName: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", openSSLName: "ECDHE-RSA-AES128-SHA", tls13: false),
        .init(goName: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", openSSLName: "ECDHE-RSA-AES256-SHA", tls13: false),
        .init(goName: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", openSSLName: "ECDHE-ECDSA-AES128-GCM-SHA256", tls13: false),
        .init(goName: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", openSSLName: "ECDHE-ECDSA-AES256-GCM-SHA384", tls13: false),
        .init(goName: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", openSSLName: "ECDHE-RSA-AES128-GCM-SHA256", tls13: false),
        .init(goName: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", openSSLName: "ECDHE-RSA-AES256-GCM-SHA384", tls13: false),
        .init(goName: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", openSSLName: "ECDHE-RSA-CHACHA20-POLY1305", tls13: false),
        .init(goName: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", openSSLName: "ECDHE-ECDSA-CHACHA20-POLY1305", tls13: false),
    ]

    /// Go's `tls.InsecureCipherSuites()` (Go 1.19): exporter-toolkit refuses
    /// these names too; known here only for a clearer error.
    public static let goInsecureNames: Set<String> = [
        "TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    ]

    public static func named(_ goName: String) -> TLSCipherSuite? { all.first { $0.goName == goName } }
}

/// Go's curve names, as exporter-toolkit reads them, and OpenSSL's group names.
public enum TLSCurve: String, CaseIterable, Sendable {
    case x25519 = "X25519", curveP256 = "CurveP256", curveP384 = "CurveP384", curveP521 = "CurveP521"

    /// For `SSL_CTX_set1_groups_list`.
    public var openSSLGroup: String {
        switch self {
        case .x25519: "X25519"
        case .curveP256: "P-256"
        case .curveP384: "P-384"
        case .curveP521: "P-521"
        }
    }
}
