import Glibc
import TCPTopHTTP

/// The web config file, followed as exporter-toolkit follows it (it re-reads
/// the file on every request): each `settings` read stats the file, about a
/// microsecond, and reads it again only when its identity (device, inode,
/// size, mtime, ctime) changed, or while its mtime is too recent to tell two
/// writes apart. A file that no longer reads or parses, or that `accept`
/// refuses, leaves the previous settings in force and is reported once.
public final class WebConfigWatcher: Sendable {
    public enum Event: Sendable, Equatable {
        /// The file now in force (at start, or after a change), with its notes.
        case loaded(WebConfigFile)
        /// A change that could not be used: the previous settings stay.
        case kept(problem: String)
    }

    public let path: String
    private let accept: @Sendable (WebConfigFile) throws -> Void
    private let report: @Sendable (Event) -> Void
    private let state: Locked<State>

    private struct State: Sendable {
        var settings: HTTPSecuritySettings
        var identity: FileIdentity?
        var bytes: [UInt8]?
        /// The file changed within the last second when last read: a second
        /// write in the same timestamp tick would leave its identity alone.
        var recent = true
        var shownProblem: String?
    }

    /// Reads the file now: a problem throws (one line), as a bad config does.
    /// `accept` may refuse what this build cannot serve; `report` is called
    /// outside any lock.
    public init(path: String, accept: @escaping @Sendable (WebConfigFile) throws -> Void = { _ in },
                report: @escaping @Sendable (Event) -> Void = { _ in }) throws {
        self.path = path
        self.accept = accept
        self.report = report
        // The identity first: a write after it shows as a change at the next check.
        let identity = FileIdentity.of(path)
        let bytes: [UInt8]
        switch readWholeFile(path) {
        case .success(let read): bytes = read
        case .failure(let problem):
            throw ConfigError(key: "", problem: "cannot read \(path): \(problem.reason)", source: WebConfigFile.source)
        }
        let file = try WebConfigFile.parse(yaml: String(decoding: bytes, as: UTF8.self), directory: WebConfigFile.directory(of: path))
        try accept(file)
        var first = State(settings: file.settings, bytes: bytes)
        if case .success(let seen) = identity {
            first.identity = seen
            first.recent = seen.isRecent
        }
        state = Locked(first)
        report(.loaded(file))
    }

    /// The settings in force, after looking for a change.
    public var settings: HTTPSecuritySettings {
        check()
        return state.withLock { $0.settings }
    }

    /// Looks for a change; `force` (a SIGHUP) reads the file whatever its identity.
    public func check(force: Bool = false) {
        let seen = FileIdentity.of(path)
        let event: Event? = state.withLock { state in
            let identity: FileIdentity
            switch seen {
            case .failure(let problem): return Self.keep(&state, problem: "cannot read \(path): \(problem.reason)")
            case .success(let now): identity = now
            }
            guard force || identity != state.identity || state.recent else { return nil }
            state.identity = identity
            state.recent = identity.isRecent
            let bytes: [UInt8]
            switch readWholeFile(path) {
            case .failure(let problem): return Self.keep(&state, problem: "cannot read \(path): \(problem.reason)")
            case .success(let read): bytes = read
            }
            guard bytes != state.bytes else { return nil }
            state.bytes = bytes
            do {
                let file = try WebConfigFile.parse(yaml: String(decoding: bytes, as: UTF8.self), directory: WebConfigFile.directory(of: path))
                try accept(file)
                state.settings = file.settings
                state.shownProblem = nil
                return .loaded(file)
            } catch {
                state.shownProblem = "\(error)"
                return .kept(problem: "\(error)")
            }
        }
        if let event { report(event) }
    }

    /// A file gone or unreadable: reported once, until it reads again.
    private static func keep(_ state: inout State, problem: String) -> Event? {
        state.identity = nil
        state.bytes = nil
        guard state.shownProblem != problem else { return nil }
        state.shownProblem = problem
        return .kept(problem: "web config: \(problem)")
    }
}
