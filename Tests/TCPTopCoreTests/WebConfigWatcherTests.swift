import Foundation
import TCPTopHTTP
import Testing
@testable import TCPTopCore

/// The web config file followed on disk, as exporter-toolkit follows it:
/// a change is in force at the next request; a broken one keeps the old.
@Suite struct WebConfigWatcherTests {
    static let alice = "basic_auth_users:\n  alice: $2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX.\n"
    static let bob = "basic_auth_users:\n  bob: $2y$10$UtF768t.zGD6sgUUmtV/ie1N9DYKpWZsrtpYeYz/LIWaC3qO/JVX.\n"
    static let carol = "basic_auth_users:\n  cal: $2b$04$5DGjeFuOJdbR9gw0OM8Pxeo3We/xIuGvadWgjCBf2Kz5Q4GzyG4F.\n"

    @Test func aChangeIsInForceAtTheNextRead() throws {
        let file = try TemporaryFile(Self.alice)
        let events = Events()
        let watcher = try WebConfigWatcher(path: file.path, report: events.add)
        #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["alice"])
        try file.replace(Self.bob)  // a new inode, as editors and config managers write
        #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["bob"])
        // Rewritten in place at once, the same size: on kernels without
        // multigrain timestamps (before 6.13) mtime and ctime may not have
        // moved, and the change is still seen (the watcher re-reads a file
        // written within the last second).
        try file.overwrite(Self.carol)
        #expect(Self.carol.utf8.count == Self.bob.utf8.count)
        #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["cal"])
        #expect(events.all.count == 3)
        #expect(events.all.allSatisfy { if case .loaded = $0 { true } else { false } })
    }

    @Test func aBrokenChangeKeepsTheOldSettingsAndIsReportedOnce() throws {
        let file = try TemporaryFile(Self.alice)
        let events = Events()
        let watcher = try WebConfigWatcher(path: file.path, report: events.add)
        try file.replace("basic_auth_users:\n  alice: not-a-hash\n")
        for _ in 0..<100 { #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["alice"]) }
        let kept = events.all.filter { if case .kept = $0 { true } else { false } }
        #expect(kept == [.kept(problem: "web config: basic_auth_users.alice: must be a bcrypt hash ($2y$, $2b$ or $2a$, what "
                                   + "`htpasswd -nbBC 10 USER PASSWORD` writes after the colon); the value is not shown, it may be a password")])
        // Gone: the old settings stay, said once.
        try FileManager.default.removeItem(atPath: file.path)
        for _ in 0..<100 { #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["alice"]) }
        #expect(events.all.last == .kept(problem: "web config: cannot read \(file.path): No such file or directory"))
        #expect(events.all.count == 3)
        // Back, fixed: in force at the next read.
        try file.replace(Self.bob)
        #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["bob"])
        #expect(events.all.count == 4)
    }

    @Test func whatAcceptRefusesIsAnErrorAtStartAndKeptAfter() throws {
        struct Refused: Error, CustomStringConvertible { var description: String { "web config: tls_server_config: no TLS here" } }
        let refuseTLS: @Sendable (WebConfigFile) throws -> Void = { if $0.settings.tls != nil { throw Refused() } }
        let tlsFile = try TemporaryFile("tls_server_config: {cert_file: c, key_file: k}\n")
        #expect(throws: Refused.self) { try WebConfigWatcher(path: tlsFile.path, accept: refuseTLS) }
        #expect(throws: ConfigError.self) { try WebConfigWatcher(path: tlsFile.path + ".missing", accept: refuseTLS) }

        let file = try TemporaryFile(Self.alice)
        let events = Events()
        let watcher = try WebConfigWatcher(path: file.path, accept: refuseTLS, report: events.add)
        try file.replace("tls_server_config: {cert_file: c, key_file: k}\n" + Self.bob)
        #expect(watcher.settings.basicAuthUsers.keys.sorted() == ["alice"])
        #expect(events.all.last == .kept(problem: "web config: tls_server_config: no TLS here"))
    }

    /// What following the file costs a request: one stat(2) when it has not changed.
    @Test func anUnchangedFileCostsAStat() throws {
        let file = try TemporaryFile(Self.alice)
        try file.setModified(secondsAgo: 60)
        let watcher = try WebConfigWatcher(path: file.path)
        _ = watcher.settings  // past the first second's re-reads
        let reads = 100_000
        let start = ContinuousClock.now
        for _ in 0..<reads { precondition(!watcher.settings.basicAuthUsers.isEmpty) }
        let perRead = (ContinuousClock.now - start).inSeconds / Double(reads)
        print("web config watcher: \(String(format: "%.2f", perRead * 1e6)) µs per request for an unchanged file")
        #expect(perRead < 50e-6)
    }
}

/// What the watcher reported, in order.
final class Events: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [WebConfigWatcher.Event] = []
    var all: [WebConfigWatcher.Event] { lock.withLock { events } }
    func add(_ event: WebConfigWatcher.Event) { lock.withLock { events.append(event) } }
}

/// A file in a directory of its own, removed at the end.
final class TemporaryFile {
    let directory: String
    let path: String

    init(_ text: String) throws {
        directory = NSTemporaryDirectory() + "webconfig-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/web-config.yml"
        try replace(text)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Writes a new file and renames it over the old one.
    func replace(_ text: String) throws { try text.write(toFile: path, atomically: true, encoding: .utf8) }

    /// Truncates and writes the same inode.
    func overwrite(_ text: String) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
    }

    func setModified(secondsAgo: Double) throws {
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-secondsAgo)], ofItemAtPath: path)
    }
}
