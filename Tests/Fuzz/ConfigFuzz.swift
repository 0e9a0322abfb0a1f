// libFuzzer target: the config reader, ExporterConfig.parse(yaml:), on any
// bytes (read as the daemon reads a file: UTF-8, bad bytes replaced), and
// the web config reader, WebConfigFile.parse(yaml:), on the same bytes.
// A config either parses to values within their bounds or throws a
// ConfigError of one line; anything else (a trap, an ASan report, another
// error type) is a crash and fails `make fuzz`. Built by Tests/Fuzz/run.sh.
import TCPTopCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let config = try ExporterConfig.parse(yaml: text)
        check(config)
    } catch let error as ConfigError {
        checkOneLine(error, prefix: "config: ")
    } catch {
        preconditionFailure("parse threw something other than a ConfigError: \(error)")
    }
    do {
        check(try WebConfigFile.parse(yaml: text))
    } catch let error as ConfigError {
        checkOneLine(error, prefix: "web config: ")
    } catch {
        preconditionFailure("the web config parse threw something other than a ConfigError: \(error)")
    }
    return 0
}

/// One line that starts with `prefix`. By bytes and scalars: a key may start
/// with a combining mark, which joins the space before it into one Character.
private func checkOneLine(_ error: ConfigError, prefix: String) {
    let line = error.description
    precondition(line.utf8.starts(with: prefix.utf8), "an error without its prefix \(prefix): \(line)")
    precondition(!line.unicodeScalars.contains { [0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029].contains($0.value) },
                 "an error of more than one line: \(line)")
}

/// What the server and the authenticator later take as given.
private func check(_ file: WebConfigFile) {
    for (name, hash) in file.settings.basicAuthUsers {
        // (Bcrypt lives in TCPTopHTTP, which this target does not import: its shape, then.)
        precondition(!name.contains(":") && hash.utf8.count == 60 && hash.hasPrefix("$2"), "a user the authenticator cannot check: \(name)")
    }
    for (_, value) in file.settings.headers {
        precondition(!value.isEmpty && !value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "a header value that breaks the head")
    }
    if let tls = file.settings.tls {
        precondition(!tls.certFile.isEmpty && !tls.keyFile.isEmpty && tls.minVersion <= tls.maxVersion)
        precondition(!tls.clientAuth.verifies || tls.clientCAFile != nil)
    }
}

/// What the daemon later converts without checking: every duration within
/// its bound, every size within its range.
private func check(_ config: ExporterConfig) {
    for (timeout, limit) in [(config.web.readTimeout, WebConfig.maxTimeout), (config.web.writeTimeout, WebConfig.maxTimeout),
                             (config.web.idleTimeout, WebConfig.maxTimeout),
                             (config.connections.pollInterval, ConnectionsConfig.maxPollInterval),
                             (config.connections.closedRetention, ConnectionsConfig.maxClosedRetention)] {
        precondition(timeout > .zero && timeout <= limit, "a duration past its bound: \(timeout)")
        _ = timeout.inSeconds
    }
    precondition((1...1_000_000).contains(config.web.maxRequests))
    precondition(WebConfig.maxConnectionsRange.contains(config.web.maxConnections))
    precondition(BPFConfig.mapCapacityRange.contains(config.bpf.mapCapacity))
    precondition(!config.web.listenAddresses.isEmpty && !config.views.isEmpty)
    precondition(WebConfig.telemetryPathProblem(config.web.telemetryPath) == nil)
    for view in config.views { precondition((0...Int(Int32.max)).contains(view.maxSeries)) }
}
