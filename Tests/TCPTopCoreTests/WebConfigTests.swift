import Foundation
import TCPTopHTTP
import Testing
@testable import TCPTopCore

/// The exporter-toolkit web config format, key for key: defaults, every
/// key, and each check as a one-line error naming the key.
@Suite struct WebConfigTests {
    static let hash = "$2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX."

    @Test func anEmptyFileAsksForNothing() throws {
        for yaml in ["", "# nothing\n", "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n", "basic_auth_users: {}\n"] {
            #expect(try WebConfigFile.parse(yaml: yaml) == WebConfigFile(), "\(yaml)")
        }
    }

    @Test func readsEveryTLSKey() throws {
        let file = try WebConfigFile.parse(yaml: """
            tls_server_config:
              cert_file: server.crt
              key_file: /etc/keys/server.key
              client_auth_type: RequireAndVerifyClientCert
              client_ca_file: ca/clients.pem
              client_allowed_sans: [prometheus.example.org, 10.0.0.7, "spiffe://example.org/prometheus"]
              min_version: TLS13
              max_version: TLS13
              cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
              curve_preferences: [X25519, CurveP256, CurveP384, CurveP521]
              prefer_server_cipher_suites: false
            """, directory: "/etc/tcptop")
        let tls = try #require(file.settings.tls)
        // Relative paths are relative to the file's directory, as in exporter-toolkit.
        #expect(tls.certFile == "/etc/tcptop/server.crt")
        #expect(tls.keyFile == "/etc/keys/server.key")
        #expect(tls.clientCAFile == "/etc/tcptop/ca/clients.pem")
        #expect(tls.clientAuth == .requireAndVerifyClientCert)
        #expect(tls.clientAllowedSANs == ["prometheus.example.org", "10.0.0.7", "spiffe://example.org/prometheus"])
        #expect(tls.minVersion == .tls13 && tls.maxVersion == .tls13)
        #expect(tls.cipherSuites.map(\.openSSLName) == ["ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_256_GCM_SHA384"])
        #expect(tls.cipherSuites.map(\.tls13) == [false, true])
        #expect(tls.curvePreferences.map(\.openSSLGroup) == ["X25519", "P-256", "P-384", "P-521"])
        #expect(!tls.preferServerCipherSuites)
        #expect(file.notes.isEmpty)
    }

    @Test func tlsDefaultsAreExporterToolkits() throws {
        let tls = try #require(try WebConfigFile.parse(yaml: "tls_server_config: {cert_file: c.pem, key_file: k.pem}").settings.tls)
        var expected = TLSSettings(certFile: "./c.pem", keyFile: "./k.pem")
        expected.clientAuth = .noClientCert
        expected.minVersion = .tls12
        expected.maxVersion = .tls13
        expected.preferServerCipherSuites = true
        #expect(tls == expected)
        #expect(tls.cipherSuites.isEmpty && tls.curvePreferences.isEmpty && tls.clientAllowedSANs.isEmpty && tls.clientCAFile == nil)
    }

    @Test(arguments: [
        ("RequestClientCert", TLSClientAuth.requestClientCert), ("RequireAnyClientCert", .requireAnyClientCert),
        ("RequireClientCert", .requireAnyClientCert),  // exporter-toolkit's older name
        ("VerifyClientCertIfGiven", .verifyClientCertIfGiven), ("NoClientCert", .noClientCert), ("\"\"", .noClientCert),
    ] as [(String, TLSClientAuth)])
    func readsEachClientAuthType(text: String, expected: TLSClientAuth) throws {
        let ca = expected.verifies ? ", client_ca_file: ca.pem" : ""
        let file = try WebConfigFile.parse(yaml: "tls_server_config: {cert_file: c, key_file: k, client_auth_type: \(text)\(ca)}")
        #expect(file.settings.tls?.clientAuth == expected)
    }

    /// As in exporter-toolkit: TLS is on only when cert_file, key_file,
    /// client_ca_file or client_auth_type is given; the other keys alone
    /// leave plain HTTP, and a note says they take no effect.
    @Test func tlsKeysWithoutACertificateLeavePlainHTTPWithANote() throws {
        let file = try WebConfigFile.parse(yaml: "tls_server_config:\n  min_version: TLS13\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")
        #expect(file.settings.tls == nil)
        #expect(file.notes == ["web config: tls_server_config: min_version, cipher_suites take no effect without cert_file and key_file; "
                               + "serving plain HTTP, as exporter-toolkit does"])
        // A key without a value, or "", is a string left unset, as in Go.
        #expect(try WebConfigFile.parse(yaml: "tls_server_config:\n  cert_file:\n  key_file: \"\"\n").settings.tls == nil)
    }

    @Test func readsHeadersAndHTTP2() throws {
        let file = try WebConfigFile.parse(yaml: """
            http_server_config:
              http2: false
              headers:
                Strict-Transport-Security: max-age=31536000
                X-Content-Type-Options: nosniff
                X-Frame-Options: sameorigin
                X-XSS-Protection: 1
                Content-Security-Policy: ""
            """)
        #expect(file.settings.headers == [
            "Strict-Transport-Security": "max-age=31536000", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "sameorigin", "X-XSS-Protection": "1",
        ], "in file order; a blank one is unset, as the format says")
        #expect(try WebConfigFile.parse(yaml: "http_server_config: {http2: true}") == WebConfigFile())
    }

    @Test func readsUsers() throws {
        let file = try WebConfigFile.parse(yaml: """
            basic_auth_users:
              alice: \(Self.hash)
              "bob smith": $2b$04$5DGjeFuOJdbR9gw0OM8Pxeo3We/xIuGvadWgjCBf2Kz5Q4GzyG4F.
              123: $2a$04$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHIG
            """)
        #expect(file.settings.basicAuthUsers == [
            "alice": Self.hash, "bob smith": "$2b$04$5DGjeFuOJdbR9gw0OM8Pxeo3We/xIuGvadWgjCBf2Kz5Q4GzyG4F.",
            "123": "$2a$04$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHIG",
        ])
    }

    @Test(arguments: [
        ("tls_server_confg: {}", "web config: tls_server_confg: unknown key (known keys here: tls_server_config, http_server_config, basic_auth_users)"),
        ("rate_limit: {interval: 1s, burst: 5}",
         "web config: rate_limit: not supported by tcptop-exporter (exporter-toolkit's rate limiter; web.max_requests bounds concurrent requests)"),
        ("tls_server_config: {cert: x}", "web config: tls_server_config.cert: not supported by tcptop-exporter (an inline certificate: use cert_file)"),
        ("tls_server_config: {key: x}", "web config: tls_server_config.key: not supported by tcptop-exporter (an inline key: use key_file)"),
        ("tls_server_config: {client_ca: x}", "web config: tls_server_config.client_ca: not supported by tcptop-exporter (an inline CA: use client_ca_file)"),
        ("tls_server_config: {cert_filse: c}",
         "web config: tls_server_config.cert_filse: unknown key (known keys here: cert_file, key_file, client_auth_type, client_ca_file, "
            + "client_allowed_sans, min_version, max_version, cipher_suites, curve_preferences, prefer_server_cipher_suites)"),
        ("tls_server_config: {min_version: TLS111}", "web config: tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13, got \"TLS111\""),
        ("tls_server_config: {max_version: }", "web config: tls_server_config.max_version: must be one of TLS10, TLS11, TLS12, TLS13, got nothing"),
        ("tls_server_config: {cipher_suites: [TLS_FOO]}",
         "web config: tls_server_config.cipher_suites[0]: \"TLS_FOO\" is not a cipher suite exporter-toolkit knows (Go's names, like TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"),
        ("tls_server_config: {cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_RSA_WITH_3DES_EDE_CBC_SHA]}",
         "web config: tls_server_config.cipher_suites[1]: \"TLS_RSA_WITH_3DES_EDE_CBC_SHA\" is one of Go's insecure cipher suites, which exporter-toolkit refuses too"),
        ("tls_server_config: {cipher_suites: TLS_AES_128_GCM_SHA256}",
         "web config: tls_server_config.cipher_suites: must be a list of cipher suites, got \"TLS_AES_128_GCM_SHA256\""),
        ("tls_server_config: {curve_preferences: [CurveP224]}",
         "web config: tls_server_config.curve_preferences[0]: must be one of X25519, CurveP256, CurveP384, CurveP521, got \"CurveP224\""),
        ("tls_server_config: {prefer_server_cipher_suites: maybe}", "web config: tls_server_config.prefer_server_cipher_suites: must be true or false, got \"maybe\""),
        ("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireCert}",
         "web config: tls_server_config.client_auth_type: must be one of NoClientCert, RequestClientCert, RequireAnyClientCert, "
            + "VerifyClientCertIfGiven, RequireAndVerifyClientCert, got \"RequireCert\""),
        ("tls_server_config: {cert_file: c}", "web config: tls_server_config: TLS needs key_file (and cert_file): it is missing"),
        ("tls_server_config: {key_file: k}", "web config: tls_server_config: TLS needs cert_file (and key_file): it is missing"),
        ("tls_server_config: {client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca}",
         "web config: tls_server_config: TLS needs cert_file (and key_file): it is missing"),
        ("tls_server_config: {cert_file: c, key_file: k, client_ca_file: ca}",
         "web config: tls_server_config: client_ca_file is given but client_auth_type is NoClientCert; "
            + "to check client certificates against it, set client_auth_type: RequireAndVerifyClientCert"),
        ("tls_server_config: {cert_file: c, key_file: k, client_auth_type: VerifyClientCertIfGiven}",
         "web config: tls_server_config: client_auth_type VerifyClientCertIfGiven needs client_ca_file, the CA that signs the client certificates"),
        ("tls_server_config: {cert_file: c, key_file: k, min_version: TLS13, max_version: TLS12}",
         "web config: tls_server_config: min_version TLS13 is above max_version TLS12: no connection could be made"),
        ("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAnyClientCert, client_allowed_sans: [a]}",
         "web config: tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert (or VerifyClientCertIfGiven): "
            + "the SANs of a certificate nobody verified prove nothing"),
        ("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca, client_allowed_sans: []}",
         "web config: tls_server_config.client_allowed_sans: must list at least one SAN (an empty list would refuse every client)"),
        ("tls_server_config: {cert_file: [c]}", "web config: tls_server_config.cert_file: must be a file name, got a list"),
        ("http_server_config: {http2: 2}", "web config: http_server_config.http2: must be true or false, got \"2\""),
        ("http_server_config: {headers: {Server: x}}",
         "web config: http_server_config.headers.Server: this header cannot be set; exporter-toolkit allows only Content-Security-Policy, "
            + "X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security"),
        ("http_server_config: {headers: {x-frame-options: deny}}",
         "web config: http_server_config.headers.x-frame-options: this header cannot be set; exporter-toolkit allows only Content-Security-Policy, "
            + "X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security"),
        ("http_server_config: {headers: {X-Frame-Options: DENY}}", "web config: http_server_config.headers.X-Frame-Options: must be \"deny\" or \"sameorigin\", got \"DENY\""),
        ("http_server_config: {headers: {X-Content-Type-Options: \"\"}}", "web config: http_server_config.headers.X-Content-Type-Options: must be \"nosniff\", got \"\""),
        ("http_server_config: {headers: {Content-Security-Policy: \"a\\r\\nSet-Cookie: x\"}}",
         "web config: http_server_config.headers.Content-Security-Policy: must not hold control characters (a line break would end the header)"),
        ("http_server_config: {headers: [X-Frame-Options]}", "web config: http_server_config.headers: must be a mapping, got a list"),
        ("http_server_config: {headers: {X-Frame-Options: deny, X-Frame-Options: sameorigin}}",
         "web config: http_server_config.headers.X-Frame-Options: given more than once"),
        ("basic_auth_users: {\"a:b\": $2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX.}",
         "web config: basic_auth_users.a:b: a user name cannot hold \":\" (basic auth ends the name at the first one)"),
        ("basic_auth_users: {alice: }",
         "web config: basic_auth_users.alice: must be a bcrypt hash ($2y$, $2b$ or $2a$, what `htpasswd -nbBC 10 USER PASSWORD` writes after the colon), got nothing"),
        ("basic_auth_users: [alice]", "web config: basic_auth_users: must be a mapping, got a list"),
        ("basic_auth_users: {alice: $2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX., alice: $2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX.}",
         "web config: basic_auth_users.alice: given more than once"),
        ("basic_auth_users: x\nbasic_auth_users: y", "web config: basic_auth_users: given more than once"),
        ("just text", "web config: must be a mapping with keys tls_server_config, http_server_config, basic_auth_users, got \"just text\""),
    ] as [(String, String)])
    func eachCheckIsOneLineNamingTheKey(yaml: String, expected: String) throws {
        let error = try #require(throws: ConfigError.self) { try WebConfigFile.parse(yaml: yaml) }
        #expect(error.description == expected)
        #expect(!error.description.contains("\n"))
    }

    /// A plaintext password written where the hash goes (exporter-toolkit's
    /// own bad example) must not reach the log.
    @Test func aBadHashIsNeverEchoed() throws {
        let error = try #require(throws: ConfigError.self) { try WebConfigFile.parse(yaml: "basic_auth_users:\n  john: doe-s3cret\n") }
        #expect(error.description == "web config: basic_auth_users.john: must be a bcrypt hash ($2y$, $2b$ or $2a$, what "
                    + "`htpasswd -nbBC 10 USER PASSWORD` writes after the colon); the value is not shown, it may be a password")
        #expect(!error.description.contains("doe-s3cret"))
    }

    @Test(arguments: ["tls_server_config: [", "a: b: c", "\t- x", String(repeating: "[", count: 10_000)])
    func invalidYAMLGivesOneLine(yaml: String) throws {
        let error = try #require(throws: ConfigError.self) { try WebConfigFile.parse(yaml: yaml) }
        #expect(error.description.hasPrefix("web config: invalid YAML: "))
        #expect(!error.description.contains("\n"))
    }

    @Test func aMissingFileIsOneLine() throws {
        let error = try #require(throws: ConfigError.self) { try WebConfigFile.load(path: "/nonexistent/web-config.yml") }
        #expect(error.description == "web config: cannot read /nonexistent/web-config.yml: No such file or directory")
    }

    @Test func pathsInTheFileAreRelativeToItsDirectory() throws {
        #expect(WebConfigFile.directory(of: "/etc/tcptop/web.yml") == "/etc/tcptop")
        #expect(WebConfigFile.directory(of: "web.yml") == ".")
        #expect(WebConfigFile.directory(of: "/web.yml") == "/")
        #expect(WebConfigFile.directory(of: "conf/web.yml") == "conf")
        let directory = NSTemporaryDirectory() + "webconfig-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "tls_server_config: {cert_file: a.crt, key_file: /k.key}\n".write(toFile: directory + "/w.yml", atomically: true, encoding: .utf8)
        let tls = try #require(try WebConfigFile.load(path: directory + "/w.yml").settings.tls)
        #expect(tls.certFile == directory + "/a.crt")
        #expect(tls.keyFile == "/k.key")
    }

    @Test func theShippedExampleParsesAndAsksForBasicAuth() throws {
        let file = try WebConfigFile.load(path: packageRoot + "/Config/web-config.yml")
        #expect(file.settings.tls == nil, "TLS stays commented out until it is available")
        #expect(file.settings.basicAuthUsers == ["prometheus": Self.hash])
        #expect(file.settings.headers["X-Frame-Options"] == "deny")
        #expect(file.notes.isEmpty)
        // Its commented TLS part, uncommented, is a valid file too.
        let text = try String(contentsOfFile: packageRoot + "/Config/web-config.yml", encoding: .utf8)
        let tlsPart = text[text.range(of: "# tls_server_config:")!.lowerBound...].split(separator: "\n")
            .filter { $0.hasPrefix("# ") && !$0.hasPrefix("#   #") }.map { $0.dropFirst(2) }.joined(separator: "\n")
            .replacingOccurrences(of: "client_auth_type: NoClientCert", with: "client_auth_type: RequireAndVerifyClientCert")
        let tls = try #require(try WebConfigFile.parse(yaml: tlsPart).settings.tls)
        #expect(tls.clientAllowedSANs == ["prometheus.example.org"])
        #expect(tls.cipherSuites.count == 2 && tls.curvePreferences == [.x25519, .curveP256])
    }

    @Test func theMainConfigNamesTheFile() throws {
        #expect(try ExporterConfig.parse(yaml: "web: {config_file: /etc/tcptop-exporter/web-config.yml}").web.configFile
                    == "/etc/tcptop-exporter/web-config.yml")
        #expect(try ExporterConfig.parse(yaml: "web: {config_file: \"\"}").web.configFile == nil)
        #expect(ExporterConfig().web.configFile == nil)
        let error = try #require(throws: ConfigError.self) { try ExporterConfig.parse(yaml: "web: {config_file: [a]}") }
        #expect(error.description == "config: web.config_file: must be the path of an exporter-toolkit web config file, or \"\" for none, got a list")
    }
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
