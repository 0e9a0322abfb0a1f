import TCPTopHTTP
import ArgumentParser
import Foundation
import TCPTopCore
import TCPTopServer

/// Options only; behaviour lives in TCPTopServer.Daemon.
@main
struct ExporterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcptop-exporter",
        abstract: "Counts TCP bytes per connection and process with eBPF and serves them to Prometheus.",
        discussion: "Needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF (tp_btf or raw_tp hooks on Linux >= 6.3, fexit or kprobe before; chosen at start by trying).",
        version: tcptopVersion)

    @Option(name: .customLong("web.listen-address"),
            help: "Address to listen on, host:port; \":9435\" is every IPv4 and IPv6 address. Repeatable. (default: :9435)")
    var listenAddresses: [String] = []

    @Option(name: .customLong("web.telemetry-path"), help: "Path under which to expose metrics. (default: /metrics)")
    var telemetryPath: String?

    @Option(name: .customLong("config.file"), help: "YAML configuration file; embedded defaults when absent.")
    var configFile: String?

    @Option(name: .customLong("web.config.file"),
            help: "exporter-toolkit web config file: TLS, basic auth users and headers; followed while running. \"\" for none. (default: web.config_file)")
    var webConfigFile: String?

    @Option(name: .customLong("bpf.attach-mode"),
            help: "Kernel hooks: auto, tp_btf, raw_tp, fexit or kprobe. (default: auto: the best the kernel allows)")
    var attachMode: String?

    @Option(name: .customLong("bpf.read-path"),
            help: "How counters are read: auto, storage_iterator, storage_array or socket_hash. (default: auto: the best the kernel allows)")
    var readPath: String?

    @Option(name: .customLong("log.level"), help: "debug, info, warn or error. (default: info)")
    var logLevel: String?

    @Option(name: .customLong("log.format"), help: "logfmt or json. (default: logfmt)")
    var logFormat: String?

    /// Usage errors are one line and exit 2; --help and --version print and exit 0.
    static func main() {
        // A write to a pipe or socket whose reader has gone fails with EPIPE
        // instead of killing the daemon (stderr on a pipe, a scraper gone).
        signal(SIGPIPE, SIG_IGN)
        Daemon.blockHandledSignals()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            writeToStandardError("tcptop-exporter: \(message(for: error))\n")
            Foundation.exit(2)
        }
    }

    func validate() throws {
        // The config key's rule: a path the router can never match (a "?" in it, say) is refused, not served as 404s.
        if let telemetryPath, let problem = WebConfig.telemetryPathProblem(telemetryPath) {
            throw ValidationError("--web.telemetry-path: \(problem)")
        }
        if let logLevel, LogLevel(rawValue: logLevel) == nil {
            throw ValidationError("--log.level must be one of debug, info, warn, error; got \"\(logLevel)\"")
        }
        if let attachMode, BPFAttachMode(rawValue: attachMode) == nil {
            let choices = BPFAttachMode.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("--bpf.attach-mode must be one of \(choices); got \"\(attachMode)\"")
        }
        if let readPath, BPFReadPath(rawValue: readPath) == nil {
            let choices = BPFReadPath.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("--bpf.read-path must be one of \(choices); got \"\(readPath)\"")
        }
        if let logFormat, LogFormat(rawValue: logFormat) == nil {
            throw ValidationError("--log.format must be logfmt or json; got \"\(logFormat)\"")
        }
    }

    func run() throws {
        var options = Daemon.Options()
        options.configPath = configFile
        options.telemetryPath = telemetryPath
        options.webConfigFile = webConfigFile
        options.logLevel = logLevel.flatMap(LogLevel.init(rawValue:))
        options.logFormat = logFormat.flatMap(LogFormat.init(rawValue:))
        options.attachMode = attachMode.flatMap(BPFAttachMode.init(rawValue:))
        options.readPath = readPath.flatMap(BPFReadPath.init(rawValue:))
        do {
            options.listenAddresses = try listenAddresses.map(ListenAddress.parse)
        } catch {
            throw ValidationError("--web.listen-address: \(error)")
        }
        let daemon: Daemon
        do {
            daemon = try Daemon(options: options)
        } catch {
            writeToStandardError("tcptop-exporter: \(error)\n")
            throw ExitCode(2)
        }
        throw ExitCode(daemon.run())
    }
}
