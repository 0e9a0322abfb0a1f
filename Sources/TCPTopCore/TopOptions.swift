import TCPTopHTTP

/// The command line of `tcptop`: bcc's options and meaning (`[-h] [-C] [-S]
/// [-p PID] [interval] [count]`), libbpf-tools' extras (`-4`, `-6`, `-r`,
/// `-s`, `-c`), `--from URL`, `-R` (RETRANS and RTT_MS columns) and `-L`
/// (tcplife's lines for the connections that closed), which neither original has. Parsed by hand, argparse-style (`-CS`,
/// `-p181`, `--pid=181`, `--`), so that usage and errors read like the
/// original's and every error is one line.

public enum TopSort: String, CaseIterable, Sendable {
    /// Sent + received, the original's order.
    case all, sent, received
}

public struct TopOptions: Equatable, Sendable {
    /// Seconds between outputs.
    public var interval = 1
    /// Outputs before exiting; nil = until Ctrl-C.
    public var count: Int?
    public var noClear = false
    public var noSummary = false
    public var pid: UInt32?
    /// Only this family (from -4 or -6); nil = both.
    public var family: AddressFamily?
    /// Rows per table.
    public var rows = 20
    public var sort = TopSort.all
    /// -R: add the RETRANS and RTT_MS columns.
    public var healthColumns = false
    /// -L: after each interval's tables, a tcplife line per connection end
    /// that closed in it (local tracing only).
    public var lifetimes = false
    /// cgroup v2 directory: only its processes (BPF mode only).
    public var cgroupPath: String?
    /// Read a tcptop-exporter's metrics instead of tracing.
    public var fromURL: TopMetricsURL?
    /// For an https:// --from: the CA file and client certificate.
    public var fromTLS = TLSClientSettings()
    /// Basic auth for --from: the user, and the file holding the password
    /// (nil: the TCPTOP_PASSWORD environment variable).
    public var fromUser: String?
    public var fromPasswordFile: String?

    public init() {}
}

/// What the command line asks for.
public enum TopCommand: Equatable, Sendable {
    case help
    case run(TopOptions)
}

/// A usage problem; `description` is the one line printed after "tcptop: ".
public struct TopUsageError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum TopArguments {
    public static let usage = """
        usage: tcptop [-h] [-C] [-S] [-p PID] [-c PATH] [-4 | -6] [-r ROWS]
                      [-s {all,sent,received}] [-R] [-L] [--from URL]
                      [interval] [count]

        Summarize TCP send/recv throughput by host

        positional arguments:
          interval              output interval, in seconds (default 1)
          count                 number of outputs (default: until Ctrl-C)

        optional arguments:
          -h, --help            show this help message and exit
          -C, --noclear         don't clear the screen
          -S, --nosummary       skip system summary line
          -p PID, --pid PID     trace this PID only
          -c PATH, --cgroup PATH
                                trace only processes in this cgroup v2 directory
          -4, --ipv4            trace IPv4 family only
          -6, --ipv6            trace IPv6 family only
          -r ROWS, --rows ROWS  maximum rows to print per table (default 20)
          -s SORT, --sort SORT  sort rows by all (sent + received, default),
                                sent or received
          -R, --retrans         add columns RETRANS (segments retransmitted in
                                the interval) and RTT_MS (smoothed round-trip
                                time at the interval's end); - when unknown
          -L, --lifetimes       after each interval, a line per connection that
                                closed in it, as tcplife prints them (its bytes,
                                lifetime in ms); not with --from
          --from URL            show a running tcptop-exporter's counters instead
                                of tracing (no root needed); URL is
                                [http://]host[:port][/path], port 9435 and path
                                /metrics by default
          --ca-file PATH        with an https:// URL: the CA that signs the
                                exporter's certificate (default: the system's)
          --cert-file PATH, --key-file PATH
                                with an https:// URL: a client certificate
          --user USER           basic auth user for --from; the password is read
                                from --password-file PATH (its first line), else
                                from the TCPTOP_PASSWORD environment variable

        Needs root (or CAP_BPF and CAP_PERFMON), except with --from.
        The screen is not cleared when stdout is not a terminal.

        examples:
            tcptop                 # trace TCP send/recv by host
            tcptop -C              # don't clear the screen
            tcptop -p 181          # only trace PID 181
            tcptop -C 5 10         # 5 second summaries, 10 times, no clearing
            tcptop -6 -s sent      # IPv6 only, sorted by bytes sent
            tcptop -R              # with retransmits and RTT per connection
            tcptop -L              # and the connections that closed, with lifetimes
            tcptop -c /sys/fs/cgroup/unified/system.slice   # only this cgroup
            tcptop --from http://db1:9435/metrics          # view a remote exporter
            tcptop --from https://db1:9435 --ca-file ca.crt --user prometheus --password-file pw

        """

    public static func parse(_ arguments: [String]) throws(TopUsageError) -> TopCommand {
        var options = TopOptions()
        var positionals: [String] = []
        var ipv4 = false, ipv6 = false
        var index = 0
        var onlyPositionals = false

        // A negative number is a (bad) positional, as with argparse, except
        // the option clusters made of -4 and -6.
        func isNumber(_ text: String) -> Bool {
            let digits = text.dropFirst()
            return !digits.isEmpty && digits.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") }
                && !digits.allSatisfy { $0 == "4" || $0 == "6" }
        }

        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if onlyPositionals || argument == "-" || !argument.hasPrefix("-") || isNumber(argument) {
                positionals.append(argument)
                continue
            }
            if argument == "--" {
                onlyPositionals = true
                continue
            }

            // The value of an option: attached (`--pid=1`, `-p1`) or the next argument.
            func value(_ name: String, attached: String?) throws(TopUsageError) -> String {
                if let attached { return attached }
                guard index < arguments.count else { throw TopUsageError("\(name): expected a value") }
                index += 1
                return arguments[index - 1]
            }

            if argument.hasPrefix("--") {
                let body = argument.dropFirst(2)
                let name = String(body.prefix { $0 != "=" })
                let attached = body.contains("=") ? String(body.drop { $0 != "=" }.dropFirst()) : nil
                func flag() throws(TopUsageError) {
                    if attached != nil { throw TopUsageError("--\(name) takes no value") }
                }
                switch name {
                case "help": try flag(); return .help
                case "noclear": try flag(); options.noClear = true
                case "nosummary": try flag(); options.noSummary = true
                case "ipv4": try flag(); ipv4 = true
                case "ipv6": try flag(); ipv6 = true
                case "retrans": try flag(); options.healthColumns = true
                case "lifetimes": try flag(); options.lifetimes = true
                case "pid": options.pid = try pid(value("-p/--pid", attached: attached))
                case "cgroup": options.cgroupPath = try cgroup(value("-c/--cgroup", attached: attached))
                case "rows": options.rows = try rows(value("-r/--rows", attached: attached))
                case "sort": options.sort = try sort(value("-s/--sort", attached: attached))
                case "from": options.fromURL = try url(value("--from", attached: attached))
                case "ca-file": options.fromTLS.caFile = try path(value("--ca-file", attached: attached), "--ca-file")
                case "cert-file": options.fromTLS.certFile = try path(value("--cert-file", attached: attached), "--cert-file")
                case "key-file": options.fromTLS.keyFile = try path(value("--key-file", attached: attached), "--key-file")
                case "user": options.fromUser = try path(value("--user", attached: attached), "--user")
                case "password-file": options.fromPasswordFile = try path(value("--password-file", attached: attached), "--password-file")
                default: throw TopUsageError("unrecognized option \"--\(name)\" (see tcptop -h)")
                }
                continue
            }

            // A cluster of short options: -CS, -p181, -Cp 181.
            var letters = Substring(argument.dropFirst())
            while let letter = letters.first {
                letters = letters.dropFirst()
                let attached = letters.isEmpty ? nil : String(letters)
                switch letter {
                case "h": return .help
                case "C": options.noClear = true
                case "S": options.noSummary = true
                case "4": ipv4 = true
                case "6": ipv6 = true
                case "R": options.healthColumns = true
                case "L": options.lifetimes = true
                case "p": options.pid = try pid(value("-p/--pid", attached: attached)); letters = ""
                case "c": options.cgroupPath = try cgroup(value("-c/--cgroup", attached: attached)); letters = ""
                case "r": options.rows = try rows(value("-r/--rows", attached: attached)); letters = ""
                case "s": options.sort = try sort(value("-s/--sort", attached: attached)); letters = ""
                default: throw TopUsageError("unrecognized option \"-\(letter)\" (see tcptop -h)")
                }
            }
        }

        if ipv4 && ipv6 {
            throw TopUsageError("-4/--ipv4 and -6/--ipv6 cannot be used together (give neither for both families)")
        }
        options.family = ipv4 ? .ipv4 : ipv6 ? .ipv6 : nil
        if options.fromURL != nil && options.lifetimes {
            throw TopUsageError("-L/--lifetimes cannot be used with --from (an exporter serves lifetimes as histograms, not per connection)")
        }
        if options.fromURL != nil && options.cgroupPath != nil {
            throw TopUsageError("-c/--cgroup cannot be used with --from (the exporter has no cgroup labels)")
        }
        let tlsGiven = options.fromTLS != TLSClientSettings()
        if options.fromURL == nil, tlsGiven || options.fromUser != nil || options.fromPasswordFile != nil {
            throw TopUsageError("--ca-file, --cert-file, --key-file, --user and --password-file go with --from")
        }
        if tlsGiven, options.fromURL?.isHTTPS == false {
            throw TopUsageError("--ca-file, --cert-file and --key-file need an https:// --from URL")
        }
        if (options.fromTLS.certFile == nil) != (options.fromTLS.keyFile == nil) {
            throw TopUsageError("--cert-file and --key-file go together")
        }
        if options.fromPasswordFile != nil, options.fromUser == nil {
            throw TopUsageError("--password-file needs --user")
        }
        if positionals.count > 2 {
            throw TopUsageError("unexpected argument \"\(positionals[2])\" (usage: tcptop [options] [interval] [count])")
        }
        if positionals.count > 0 { options.interval = try positive(positionals[0], "interval", unit: "seconds") }
        if positionals.count > 1 { options.count = try positive(positionals[1], "count", unit: "outputs") }
        return .run(options)
    }

    private static func positive(_ text: String, _ name: String, unit: String) throws(TopUsageError) -> Int {
        guard let number = Int(text), number > 0 else {
            throw TopUsageError("invalid \(name) \"\(text)\": must be a positive whole number of \(unit)")
        }
        return number
    }

    private static func pid(_ text: String) throws(TopUsageError) -> UInt32 {
        guard let number = UInt32(text), number > 0 else {
            throw TopUsageError("-p/--pid: invalid PID \"\(text)\": must be a positive number")
        }
        return number
    }

    private static func rows(_ text: String) throws(TopUsageError) -> Int {
        guard let number = Int(text), number > 0 else {
            throw TopUsageError("-r/--rows: invalid row count \"\(text)\": must be a positive number")
        }
        return number
    }

    private static func sort(_ text: String) throws(TopUsageError) -> TopSort {
        guard let sort = TopSort(rawValue: text) else {
            throw TopUsageError("-s/--sort: invalid sort key \"\(text)\": must be all, sent or received")
        }
        return sort
    }

    private static func path(_ text: String, _ name: String) throws(TopUsageError) -> String {
        guard !text.isEmpty else { throw TopUsageError("\(name): the value is empty") }
        return text
    }

    private static func cgroup(_ text: String) throws(TopUsageError) -> String {
        guard !text.isEmpty else { throw TopUsageError("-c/--cgroup: the cgroup path is empty") }
        return text
    }

    private static func url(_ text: String) throws(TopUsageError) -> TopMetricsURL {
        do {
            return try TopMetricsURL(parsing: text)
        } catch {
            throw TopUsageError("--from: \(error)")
        }
    }
}
