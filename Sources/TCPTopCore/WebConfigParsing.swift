import TCPTopHTTP
import Yams

/// A `--web.config.file`: the exporter-toolkit web configuration format
/// (docs/web-configuration.md there), read key for key with its defaults
/// and checks, so a file Debian's node_exporter starts with is read alike.
/// Errors are one line: `web config: tls_server_config.min_version: ...`.
public struct WebConfigFile: Equatable, Sendable {
    public var settings = HTTPSecuritySettings()
    /// What the file says that takes no effect, one line each, for the log.
    public var notes: [String] = []

    public init(settings: HTTPSecuritySettings = HTTPSecuritySettings(), notes: [String] = []) {
        self.settings = settings
        self.notes = notes
    }

    /// Reads and parses the file at `path`; relative paths in it are
    /// relative to its directory, as in exporter-toolkit.
    public static func load(path: String) throws -> WebConfigFile {
        let bytes: [UInt8]
        switch readWholeFile(path) {
        case .success(let read): bytes = read
        case .failure(let problem): throw ConfigError(key: "", problem: "cannot read \(path): \(problem.reason)", source: source)
        }
        return try parse(yaml: String(decoding: bytes, as: UTF8.self), directory: directory(of: path))
    }

    public static func parse(yaml: String, directory: String = ".") throws -> WebConfigFile {
        do {
            return try parseDocument(yaml, directory: directory)
        } catch var error as ConfigError {
            error.source = source
            throw error
        }
    }

    static let source = "web config"

    /// The directory part of `path`, "." when it has none.
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

private func parseDocument(_ yaml: String, directory: String) throws -> WebConfigFile {
    var file = WebConfigFile()
    guard let root = try composeBounded(yaml) else { return file }
    let top = try webFields(of: Field(node: root, key: ""), known: ["tls_server_config", "http_server_config", "basic_auth_users"],
                            unsupported: ["rate_limit": "exporter-toolkit's rate limiter; web.max_requests bounds concurrent requests"])
    if let field = top["tls_server_config"] {
        (file.settings.tls, file.notes) = try parseTLS(field, directory: directory)
    }
    if let field = top["http_server_config"] { file.settings.headers = try parseHTTPServer(field) }
    if let field = top["basic_auth_users"] { file.settings.basicAuthUsers = try parseUsers(field) }
    return file
}

private func parseTLS(_ section: Field, directory: String) throws -> (TLSSettings?, [String]) {
    let keys = try webFields(
        of: section,
        known: ["cert_file", "key_file", "client_auth_type", "client_ca_file", "client_allowed_sans", "min_version", "max_version",
                "cipher_suites", "curve_preferences", "prefer_server_cipher_suites"],
        unsupported: ["cert": "an inline certificate: use cert_file", "key": "an inline key: use key_file",
                      "client_ca": "an inline CA: use client_ca_file"])
    // As in Go, a key without a value, or "", is a string left unset.
    func path(_ name: String) throws -> String? {
        guard let field = keys[name], !isNull(field.node) else { return nil }
        let text = try scalar(field, expected: "a file name")
        guard !text.isEmpty else { return nil }
        return text.hasPrefix("/") ? text : "\(directory)/\(text)"
    }
    let certFile = try path("cert_file"), keyFile = try path("key_file"), clientCAFile = try path("client_ca_file")
    var clientAuth: TLSClientAuth?
    if let field = keys["client_auth_type"], !isNull(field.node) {
        let text = try scalar(field, expected: "a client auth type")
        // exporter-toolkit still takes RequireClientCert, an older name.
        clientAuth = text == "RequireClientCert" ? .requireAnyClientCert : TLSClientAuth(rawValue: text)
        guard clientAuth != nil || text.isEmpty else {
            throw field.error("must be one of \(TLSClientAuth.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
        }
    }
    let minVersion: TLSVersion = try keys["min_version"].map { try choice($0) } ?? .tls12
    let maxVersion: TLSVersion = try keys["max_version"].map { try choice($0) } ?? .tls13
    var cipherSuites: [TLSCipherSuite] = []
    for item in try optionalList(keys["cipher_suites"], expected: "a list of cipher suites") {
        let name = try scalar(item, expected: "a cipher suite name")
        guard let suite = TLSCipherSuite.named(name) else {
            let why = TLSCipherSuite.goInsecureNames.contains(name)
                ? "is one of Go's insecure cipher suites, which exporter-toolkit refuses too"
                : "is not a cipher suite exporter-toolkit knows (Go's names, like TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
            throw item.error("\"\(name)\" \(why)")
        }
        if !cipherSuites.contains(suite) { cipherSuites.append(suite) }
    }
    var curves: [TLSCurve] = []
    for item in try optionalList(keys["curve_preferences"], expected: "a list of curves") {
        let curve: TLSCurve = try choice(item)
        if !curves.contains(curve) { curves.append(curve) }
    }
    let preferServer = try keys["prefer_server_cipher_suites"].map(boolean) ?? true
    let sanItems = try optionalList(keys["client_allowed_sans"], expected: "a list of SANs")
    let sans = try sanItems.map { try scalar($0, expected: "a DNS name, IP address, e-mail address or URI") }

    // exporter-toolkit turns TLS on when one of these four is given.
    guard certFile != nil || keyFile != nil || clientCAFile != nil || clientAuth != nil else {
        let inert = ["min_version", "max_version", "cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans"]
            .filter { keys[$0] != nil }
        guard !inert.isEmpty else { return (nil, []) }
        return (nil, ["web config: tls_server_config: \(inert.joined(separator: ", ")) take no effect without cert_file and key_file; "
                      + "serving plain HTTP, as exporter-toolkit does"])
    }
    guard let certFile else { throw section.error("TLS needs cert_file (and key_file): it is missing") }
    guard let keyFile else { throw section.error("TLS needs key_file (and cert_file): it is missing") }
    let auth = clientAuth ?? .noClientCert
    if clientCAFile != nil && auth == .noClientCert {
        throw section.error("client_ca_file is given but client_auth_type is NoClientCert; "
                            + "to check client certificates against it, set client_auth_type: RequireAndVerifyClientCert")
    }
    // Stricter than exporter-toolkit, which would fall back to the system's
    // CAs: every public CA would then vouch for clients.
    if auth.verifies && clientCAFile == nil {
        throw section.error("client_auth_type \(auth.rawValue) needs client_ca_file, the CA that signs the client certificates")
    }
    if minVersion > maxVersion {
        throw section.error("min_version \(minVersion.rawValue) is above max_version \(maxVersion.rawValue): no connection could be made")
    }
    if let field = keys["client_allowed_sans"] {
        guard !sans.isEmpty else { throw field.error("must list at least one SAN (an empty list would refuse every client)") }
        guard auth.verifies else {
            throw field.error("needs client_auth_type RequireAndVerifyClientCert (or VerifyClientCertIfGiven): "
                              + "the SANs of a certificate nobody verified prove nothing")
        }
    }
    var tls = TLSSettings(certFile: certFile, keyFile: keyFile)
    tls.clientAuth = auth
    tls.clientCAFile = clientCAFile
    tls.clientAllowedSANs = sans
    tls.minVersion = minVersion
    tls.maxVersion = maxVersion
    tls.cipherSuites = cipherSuites
    tls.curvePreferences = curves
    tls.preferServerCipherSuites = preferServer
    return (tls, [])
}

/// The headers exporter-toolkit lets a file set, with the only values it
/// takes where it restricts them (names compare exactly, as there).
private let settableHeaders: [(name: String, values: [String])] = [
    ("Content-Security-Policy", []), ("X-Frame-Options", ["deny", "sameorigin"]), ("X-Content-Type-Options", ["nosniff"]),
    ("X-XSS-Protection", []), ("Strict-Transport-Security", []),
]

/// `http2` is read and has no effect: the server speaks HTTP/1.1 only (a
/// TLS client that offers h2 is answered in HTTP/1.1).
private func parseHTTPServer(_ section: Field) throws -> HTTPHeaders {
    let keys = try webFields(of: section, known: ["http2", "headers"], unsupported: [:])
    if let field = keys["http2"] { _ = try boolean(field) }
    var headers = HTTPHeaders()
    for (name, field) in try pairs(keys["headers"]) {
        guard let rule = settableHeaders.first(where: { $0.name == name }) else {
            throw field.error("this header cannot be set; exporter-toolkit allows only \(settableHeaders.map(\.name).joined(separator: ", "))")
        }
        let value = isNull(field.node) ? "" : try scalar(field, expected: "a header value")
        if !rule.values.isEmpty && !rule.values.contains(value) {
            throw field.error("must be \(rule.values.map { "\"\($0)\"" }.joined(separator: " or ")), got \"\(value)\"")
        }
        guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw field.error("must not hold control characters (a line break would end the header)")
        }
        // "Unset if blank", as the format says.
        if !value.isEmpty { headers.add(name: name, value: value) }
    }
    return headers
}

private func parseUsers(_ section: Field) throws -> [String: String] {
    var users: [String: String] = [:]
    for (name, field) in try pairs(section) {
        guard !name.contains(":") else {
            throw field.error("a user name cannot hold \":\" (basic auth ends the name at the first one)")
        }
        // Never echoed: a plaintext password written here by mistake must not reach a log.
        let hint = "a bcrypt hash ($2y$, $2b$ or $2a$, what `htpasswd -nbBC 10 USER PASSWORD` writes after the colon)"
        guard !isNull(field.node), let hash = field.node.scalar?.string else {
            throw field.error("must be \(hint), got \(describe(field.node))")
        }
        guard Bcrypt.cost(of: hash) != nil else { throw field.error("must be \(hint); the value is not shown, it may be a password") }
        users[name] = hash
    }
    return users
}

// MARK: - Readers for the web config's shapes

/// `fields(of:at:known:)`, after naming the keys exporter-toolkit has and we do not.
private func webFields(of section: Field, known: [String], unsupported: [String: String]) throws -> [String: Field] {
    for (name, field) in try section.node.mapping == nil ? [] : pairs(section) {
        if let what = unsupported[name] { throw field.error("not supported by tcptop-exporter (\(what))") }
    }
    return try fields(of: section.node, at: section.key, known: known)
}

/// The entries of a mapping whose keys are data (user names, header
/// names), in file order; a missing or null one is empty.
private func pairs(_ field: Field?) throws -> [(String, Field)] {
    guard let field, !isNull(field.node) else { return [] }
    guard let mapping = field.node.mapping else { throw field.error("must be a mapping, got \(describe(field.node))") }
    var seen = Set<String>()
    return try mapping.map { keyNode, value in
        guard let name = keyNode.scalar?.string else { throw field.error("keys must be plain names, got \(describe(keyNode))") }
        let entry = Field(node: value, key: field.key.isEmpty ? name : "\(field.key).\(name)")
        guard seen.insert(name).inserted else { throw entry.error("given more than once") }
        return (name, entry)
    }
}

/// A list; missing or null is empty, as in Go.
private func optionalList(_ field: Field?, expected: String) throws -> [Field] {
    guard let field, !isNull(field.node) else { return [] }
    return try list(field, expected: expected)
}

func boolean(_ field: Field) throws -> Bool {
    guard !isNull(field.node), let scalar = field.node.scalar, let value = Bool.construct(from: scalar) else {
        throw field.error("must be true or false, got \(describe(field.node))")
    }
    return value
}
