/// The TLS context for each new connection, rebuilt when the settings or
/// the certificate, key or client CA files change (a rotated certificate is
/// served on the next connection, as exporter-toolkit does: it reads them
/// at every handshake). Each call stats those files, a few microseconds; a
/// context is built only after a change, or while a file's mtime is within
/// a second (too recent to tell two writes apart). A change that does not
/// load keeps the previous context and is reported once.
public final class TLSServerContextSource: Sendable {
    private let report: @Sendable (_ problem: String?) -> Void
    private let state = Locked(State())

    private struct State: @unchecked Sendable {
        var settings: TLSSettings?
        var identities: [FileIdentity?] = []
        var recent = false
        var context: TLSServerContext?
        /// What the context in force was built from.
        var loaded: (settings: TLSSettings, identities: [FileIdentity?])?
        var shownProblem: String?
    }

    /// `report(problem)`: a change that could not be loaded (nil: a change
    /// loaded after the first context). Called outside the lock.
    public init(report: @escaping @Sendable (_ problem: String?) -> Void = { _ in }) {
        self.report = report
    }

    /// The context for `settings`: nil only when none ever loaded.
    public func context(for settings: TLSSettings) -> TLSServerContext? {
        let paths = [settings.certFile, settings.keyFile] + (settings.clientCAFile.map { [$0] } ?? [])
        let identities = paths.map { try? FileIdentity.of($0).get() }
        var event: String?? = nil
        let context = state.withLock { state -> TLSServerContext? in
            if state.settings == settings, state.identities == identities, !state.recent { return state.context }
            state.settings = settings
            state.identities = identities
            state.recent = identities.contains { $0?.isRecent ?? false }
            do {
                let built = try TLSServerContext(settings)
                if let loaded = state.loaded, loaded.settings != settings || loaded.identities != identities { event = .some(nil) }
                state.context = built
                state.loaded = (settings, identities)
                state.shownProblem = nil
            } catch {
                let problem = "\(error)"
                if state.shownProblem != problem { event = .some(problem) }
                state.shownProblem = problem
            }
            return state.context
        }
        if let event { report(event) }
        return context
    }
}
