import Dispatch
import Foundation
import TestChildProcess
import Testing
@testable import TCPTopHTTP

/// Basic auth with hashes made by Debian's tools (htpasswd from
/// apache2-utils, python3-bcrypt), checked by Debian's libcrypt.
@Suite struct BasicAuthTests {
    @Test func hashesFromHtpasswdAndPythonBcryptVerify() throws {
        let password = "p@ss wörd:with colon"
        let hashes = [
            try htpasswd(user: "alice", password: password, cost: 4),
            try pythonBcrypt(password: password, cost: 4, prefix: "2b"),
            try pythonBcrypt(password: password, cost: 5, prefix: "2a"),
        ]
        #expect(hashes.map { String($0.prefix(4)) } == ["$2y$", "$2b$", "$2a$"])
        #expect(hashes.map(Bcrypt.cost) == [4, 4, 5])
        for hash in hashes {
            #expect(Bcrypt.verify(password: Array(password.utf8), hash: hash), "\(hash)")
            #expect(!Bcrypt.verify(password: Array("p@ss wörd:with colon ".utf8), hash: hash))
            #expect(!Bcrypt.verify(password: [], hash: hash))
        }
    }

    @Test(arguments: [
        "doe", "", "$1$abcdefgh$BNxLZpf6xTwpubY50mh7E/",
        "$2x$04$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHIG",  // the buggy old variant
        "$2a$03$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHIG",  // cost below 4
        "$2a$32$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHIG",  // cost above 31
        "$2a$04$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHI",  // one short
        "$2a$04$jJK4bshoPWgDHTuHWJJ3Ge/h.BdUJ8nXWaTb9EKve061HaekqaHI+",  // not bcrypt's alphabet
    ])
    func whatIsNotABcryptHashHasNoCost(text: String) {
        #expect(Bcrypt.cost(of: text) == nil)
        #expect(!Bcrypt.verify(password: Array("not the password".utf8), hash: text))
    }

    @Test func aPasswordWithANulNeverMatches() throws {
        let hash = try htpasswd(user: "u", password: "ab", cost: 4)
        #expect(Bcrypt.verify(password: Array("ab".utf8), hash: hash))
        // C strings end at the NUL: "ab\0c" must not pass as "ab".
        #expect(!Bcrypt.verify(password: Array("ab\u{0}c".utf8), hash: hash))
        #expect(Bcrypt.hash(password: [0x61, 0, 0x62], setting: hash) == nil)
    }

    @Test func hashesCompareWhole() {
        #expect(Bcrypt.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!Bcrypt.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!Bcrypt.constantTimeEqual(Array("abc".utf8), Array("ab".utf8)))
        #expect(!Bcrypt.constantTimeEqual([], Array("a".utf8)))
        // 256 extra bytes must not wrap the length difference to zero.
        #expect(!Bcrypt.constantTimeEqual(Array("a".utf8), Array("a".utf8) + [UInt8](repeating: 0, count: 256)))
    }

    @Test func credentialsAreReadLikeRFC7617() {
        func basic(_ raw: String) -> String { "Basic " + Data(raw.utf8).base64EncodedString() }
        func pair(_ value: String) -> [String]? {
            BasicAuthenticator.credentials(value).map { [String(decoding: $0.user, as: UTF8.self), String(decoding: $0.password, as: UTF8.self)] }
        }
        #expect(pair(basic("alice:secret")) == ["alice", "secret"])
        #expect(pair(basic("alice:a:b:c")) == ["alice", "a:b:c"])
        #expect(pair(basic(":only-password")) == ["", "only-password"])
        #expect(pair(basic("alice:")) == ["alice", ""])
        #expect(pair("bAsIc   " + Data("a:b".utf8).base64EncodedString() + "  ") == ["a", "b"])
        #expect(pair(basic("no colon")) == nil)
        #expect(pair("Bearer " + Data("a:b".utf8).base64EncodedString()) == nil)
        #expect(pair("Basic") == nil)
        #expect(pair("Basic YWxpY2U6c2VjcmV0=") == nil)  // bad padding
        #expect(pair("Basic YWxpY2U6c2VjcmU") == nil)  // "alice:secre" without its padding
        #expect(pair("Basic YWxp*2U6") == nil)
        #expect(pair("Basic YQ==YQ==") == nil)  // padding inside
        #expect(Base64.decode("") == [])
        #expect(Base64.decode("YQ==") == Array("a".utf8))
        #expect(Base64.decode("YWI=") == Array("ab".utf8))
        #expect(Base64.decode("/+8=") == [0xFF, 0xEF])
    }

    /// The issue's "done when": 10,000 requests with the same wrong password
    /// cost no more than 10,000 good ones, because both are cached.
    @Test func tenThousandWrongPasswordsCostOneBcrypt() throws {
        let users = ["alice": try htpasswd(user: "alice", password: "right", cost: 10)]
        let authenticator = BasicAuthenticator()
        let good = basic("alice", "right"), wrong = basic("alice", "wrong")
        let wrongTime = try measure {
            for _ in 0..<10_000 { #expect(!authenticator.allows(authorization: wrong, users: users)) }
        }
        #expect(authenticator.bcryptCount == 1)
        let goodTime = try measure {
            for _ in 0..<10_000 { #expect(authenticator.allows(authorization: good, users: users)) }
        }
        #expect(authenticator.bcryptCount == 2)
        print("basic auth, 10,000 checks each (one bcrypt at cost 10 each): wrong password \(wrongTime) s, right password \(goodTime) s")
        #expect(wrongTime <= 3 * goodTime, "wrong \(wrongTime) s against good \(goodTime) s")
    }

    @Test func anUnknownUserCostsABcryptAsAKnownOneDoes() throws {
        let users = ["alice": try htpasswd(user: "alice", password: "right", cost: 10)]
        let authenticator = BasicAuthenticator()
        let known = try measure { #expect(!authenticator.allows(authorization: basic("alice", "guess"), users: users)) }
        let unknown = try measure { #expect(!authenticator.allows(authorization: basic("mallory", "guess"), users: users)) }
        #expect(authenticator.bcryptCount == 2, "the unknown name ran a bcrypt too")
        #expect(unknown > known / 3 && unknown < known * 3, "unknown user \(unknown) s, known user \(known) s")
        // An unknown user's password never opens anything, even the decoy's.
        for _ in 0..<100 { #expect(!authenticator.allows(authorization: basic("mallory", "guess"), users: users)) }
        #expect(authenticator.bcryptCount == 2, "and is cached")
        #expect(!authenticator.allows(authorization: basic("mallory", "right"), users: users))
        #expect(!authenticator.allows(authorization: basic("alice", "right"), users: [:]))
        #expect(!authenticator.allows(authorization: nil, users: users))
    }

    /// A user name is matched byte for byte: "é" written precomposed and
    /// decomposed are two names (Swift's String would call them equal).
    @Test func userNamesCompareAsBytes() throws {
        let users = ["\u{E9}": try htpasswd(user: "x", password: "pw", cost: 4)]
        let authenticator = BasicAuthenticator()
        #expect(authenticator.allows(authorization: basic("\u{E9}", "pw"), users: users))
        #expect(!authenticator.allows(authorization: basic("e\u{301}", "pw"), users: users))
    }

    @Test func aChangedHashIsCheckedAfresh() throws {
        let authenticator = BasicAuthenticator()
        let before = ["alice": try htpasswd(user: "alice", password: "old", cost: 4)]
        let after = ["alice": try htpasswd(user: "alice", password: "new", cost: 4)]
        #expect(authenticator.allows(authorization: basic("alice", "old"), users: before))
        #expect(!authenticator.allows(authorization: basic("alice", "old"), users: after))
        #expect(authenticator.allows(authorization: basic("alice", "new"), users: after))
        #expect(authenticator.bcryptCount == 3)
    }

    /// Many distinct wrong passwords cannot push out credentials in use, and
    /// the cache never holds more than its capacity.
    @Test func theCacheStaysBoundedAndKeepsWhatIsUsed() throws {
        let users = ["alice": try htpasswd(user: "alice", password: "right", cost: 4)]
        let authenticator = BasicAuthenticator(capacity: 16)
        #expect(authenticator.allows(authorization: basic("alice", "right"), users: users))
        for attempt in 0..<200 {
            #expect(!authenticator.allows(authorization: basic("alice", "wrong-\(attempt)"), users: users))
            if attempt % 4 == 0 { #expect(authenticator.allows(authorization: basic("alice", "right"), users: users)) }
            #expect(authenticator.cachedOutcomes <= 16)
        }
        #expect(authenticator.bcryptCount == 201, "the right password was computed once, each wrong one once")
    }

    @Test func concurrentRequestsWithNewCredentialsRunOneBcrypt() throws {
        let users = ["alice": try htpasswd(user: "alice", password: "right", cost: 8)]
        let authenticator = BasicAuthenticator()
        let good = basic("alice", "right")
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            #expect(authenticator.allows(authorization: good, users: users))
        }
        #expect(authenticator.bcryptCount == 1)
    }

    @Test func theWrapperAsksForCredentialsOnEveryPathAndAddsHeaders() throws {
        let hash = try htpasswd(user: "alice", password: "right", cost: 4)
        let settings = Settings(HTTPSecuritySettings(basicAuthUsers: ["alice": hash], headers: ["X-Frame-Options": "deny"]))
        let handler = securedHandler({ request in .text(200, "served \(request.path)\n") },
                                     authenticator: BasicAuthenticator(), settings: { settings.value })
        for path in ["/", "/metrics", "/nope?x=1"] {
            for authorization in [nil, basic("alice", "wrong"), basic("bob", "right"), "Bearer x"] {
                var request = HTTPRequest(method: "GET", target: path)
                request.headers["Authorization"] = authorization
                let response = handler(request)
                #expect(response.status == 401)
                #expect(response.headers["WWW-Authenticate"] == "Basic realm=\"tcptop-exporter\"")
                #expect(response.headers["X-Frame-Options"] == "deny")
                #expect(bodyText(response) == "Unauthorized\n")
                #expect(response.headers["Content-Type"] == "text/plain; charset=utf-8")
            }
            let response = handler(HTTPRequest(method: "GET", target: path, headers: ["authorization": basic("alice", "right")]))
            #expect(response.status == 200)
            #expect(bodyText(response) == "served \(HTTPRequest(method: "GET", target: path).path)\n")
            #expect(response.headers["X-Frame-Options"] == "deny")
            #expect(response.headers["WWW-Authenticate"] == nil)
        }
        // The settings are asked per request: without users, no credentials are needed.
        settings.value = HTTPSecuritySettings(headers: ["Content-Security-Policy": "default-src 'none'"])
        let open = handler(HTTPRequest(method: "GET", target: "/metrics"))
        #expect(open.status == 200)
        #expect(open.headers["Content-Security-Policy"] == "default-src 'none'")
        #expect(open.headers["X-Frame-Options"] == nil)
    }
}

/// Settings a test changes between requests.
private final class Settings: @unchecked Sendable {
    private let lock = NSLock()
    private var current: HTTPSecuritySettings
    init(_ settings: HTTPSecuritySettings) { current = settings }
    var value: HTTPSecuritySettings {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }
}

private func bodyText(_ response: HTTPResponse) -> String? {
    guard case .bytes(let bytes) = response.body else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

private func basic(_ user: String, _ password: String) -> String {
    "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
}

private func measure(_ work: () throws -> Void) throws -> Double {
    let start = ContinuousClock.now
    try work()
    return (ContinuousClock.now - start).inSecondsDouble
}

extension Duration {
    var inSecondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}

/// `htpasswd -nbBC cost user password` (apache2-utils): the hash after "user:".
func htpasswd(user: String, password: String, cost: Int) throws -> String {
    let line = try tool("/usr/bin/htpasswd", ["-nbBC", "\(cost)", user, password])
    guard let colon = line.firstIndex(of: ":") else { throw ToolError(description: "htpasswd wrote \(line)") }
    return String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A hash made by python3-bcrypt (Debian's /usr/bin/python3, not a pyenv one).
func pythonBcrypt(password: String, cost: Int, prefix: String) throws -> String {
    try tool("/usr/bin/python3", ["-c", "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=int(sys.argv[2]), prefix=sys.argv[3].encode())).decode())",
                                  password, "\(cost)", prefix]).trimmingCharacters(in: .whitespacesAndNewlines)
}

struct ToolError: Error, CustomStringConvertible { var description: String }

/// Runs a tool to its end (at most 30 s) and returns its stdout; a failure throws with its stderr.
func tool(_ path: String, _ arguments: [String]) throws -> String {
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw ToolError(description: "\(path) is missing: run `make deps` (apache2-utils, python3-bcrypt)")
    }
    let process = ChildProcess()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let out = directory.appendingPathComponent("out"), err = directory.appendingPathComponent("err")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    let deadline = Date().addingTimeInterval(30)
    while process.isRunning {
        guard Date() < deadline else {
            process.signal(SIGKILL)  // not SIGTERM: the child may have this thread's mask, which can block it
            throw ToolError(description: "\(path) did not finish within 30 s")
        }
        usleep(5_000)
    }
    let stdout = try String(contentsOf: out, encoding: .utf8)
    guard process.terminationStatus == 0 else {
        throw ToolError(description: "\(path) exited \(process.terminationStatus): \(try String(contentsOf: err, encoding: .utf8))")
    }
    return stdout
}
