import TCPTopHTTP
import Foundation
import Logging
import TCPTopCore

/// Level and format, shared by every logger so that a reload changes them at once.
public final class LogSettings: Sendable {
    private let current: Locked<(level: Logger.Level, format: LogFormat)>

    public init(level: LogLevel, format: LogFormat) {
        current = Locked((Self.swiftLogLevel(level), format))
    }

    public func set(level: LogLevel, format: LogFormat) {
        current.withLock { $0 = (Self.swiftLogLevel(level), format) }
    }

    var value: (level: Logger.Level, format: LogFormat) { current.withLock { $0 } }

    static func swiftLogLevel(_ level: LogLevel) -> Logger.Level {
        switch level {
        case .debug: .debug
        case .info: .info
        case .warn: .warning
        case .error: .error
        }
    }
}

/// A swift-log backend writing one line per message to stderr (journald
/// picks it up), as logfmt or JSON, like Prometheus exporters do.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    let settings: LogSettings

    public init(settings: LogSettings) {
        self.settings = settings
    }

    public var logLevel: Logger.Level {
        get { settings.value.level }
        set {}  // the level comes from the shared settings
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", Self.levelName(event.level)), ("msg", event.message.description),
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) {
            fields.append((key, value.description))
        }
        let line = settings.value.format == .json ? Self.json(fields) : Self.logfmt(fields)
        writeToStandardError(line + "\n")
    }

    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "debug"
        case .info, .notice: "info"
        case .warning: "warn"
        case .error, .critical: "error"
        }
    }

    /// go-kit's logfmt, as Prometheus exporters write it: a value is quoted
    /// when empty or when it holds a space, `=`, `"` or any control
    /// character; inside quotes `\\`, `"`, `\n`, `\r`, `\t` are escaped and
    /// every other control character is written `\u00XX`. Nothing a message
    /// holds can start a new line or hide in the terminal. Keys keep only
    /// the characters a bare key may have (others become `_`).
    static func logfmt(_ fields: [(String, String)]) -> String {
        fields.map { key, value in
            let bareKey = key.isEmpty ? "_" : String(String.UnicodeScalarView(key.unicodeScalars.map {
                $0 == " " || $0 == "=" || $0 == "\"" || isControl($0) ? "_" : $0
            }))
            let needsQuotes = value.isEmpty || value.unicodeScalars.contains { $0 == " " || $0 == "=" || $0 == "\"" || isControl($0) }
            guard needsQuotes else { return "\(bareKey)=\(value)" }
            return "\(bareKey)=\"\(escaped(value))\""
        }.joined(separator: " ")
    }

    /// One JSON object, keys sorted (a later field of the same key wins).
    /// Every control character is escaped, U+007F and U+0080–U+009F too,
    /// which JSON allows but a terminal would act on.
    static func json(_ fields: [(String, String)]) -> String {
        let object = Dictionary(fields, uniquingKeysWith: { $1 })
        return "{" + object.keys.sorted().map { "\"\(escaped($0))\":\"\(escaped(object[$0]!))\"" }.joined(separator: ",") + "}"
    }

    /// C0 controls, DEL and the C1 controls.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (scalar.value >= 0x7f && scalar.value <= 0x9f)
    }

    /// The escapes logfmt's quoted values and JSON strings share.
    static func escaped(_ text: String) -> String {
        var result = ""
        result.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where isControl(scalar):
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

/// Writes `text` to stderr with write(2), in as many calls as it takes.
/// A write that fails (EPIPE when the reader has gone, EAGAIN on a full
/// non-blocking pipe, EIO, ...) drops the rest of the text: a log line is
/// never worth the daemon. (SIGPIPE is ignored in main, so EPIPE is an
/// error here, not a signal; FileHandle.write would trap on it.)
public func writeToStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}
