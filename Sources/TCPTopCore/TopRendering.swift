/// The text tcptop prints each interval, laid out as bcc's tcptop did:
///
///     <clear screen, or a blank line with -C>
///     19:46:24 loadavg: 1.86 2.67 2.91 3/362 16681
///
///     PID    COMM         LADDR                 RADDR                  RX_KB  TX_KB
///     16647  sshd         100.66.3.172:22       100.127.69.165:6684        0   2149
///
///     PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB
///     ...
///
/// Columns are bcc's `%-6s %-12s %-21s %-21s %6s %6s` (32-wide address
/// columns for IPv6); -R adds ` %7s %6s`, RETRANS and RTT_MS (`-` when
/// unknown). The PID column widens for the whole table when a pid
/// has more than 6 digits, so columns stay aligned. Addresses longer than
/// their column push the rest of the row right, as in the original.
public struct TopScreen: Sendable {
    /// What the `clear` command writes on common terminals: cursor home, erase display.
    public static let clearSequence = "\u{1B}[H\u{1B}[2J"

    public var sort: TopSort
    /// Rows per table.
    public var maxRows: Int
    /// Show only this family (nil = both).
    public var family: AddressFamily?
    /// Show only this pid (nil = all). The tracer filters in the kernel
    /// already; `--from` filters here.
    public var pid: UInt32?
    /// -R: the RETRANS and RTT_MS columns, and rows that only retransmitted.
    public var healthColumns: Bool

    public init(sort: TopSort = .all, maxRows: Int = 20, family: AddressFamily? = nil, pid: UInt32? = nil,
                healthColumns: Bool = false) {
        self.sort = sort
        self.maxRows = maxRows
        self.family = family
        self.pid = pid
        self.healthColumns = healthColumns
    }

    public init(options: TopOptions) {
        self.init(sort: options.sort, maxRows: options.rows, family: options.family, pid: options.pid,
                  healthColumns: options.healthColumns)
    }

    /// One interval's output. `summary` is the line above the tables (nil with -S).
    public func render(rows: [TopRow], summary: String?, clear: Bool) -> String {
        var text = clear ? Self.clearSequence : "\n"
        if let summary { text += summary + "\n\n" }
        var tables: [String] = []
        for tableFamily in AddressFamily.allCases where family == nil || family == tableFamily {
            let members = rows.filter {
                $0.labels.family == tableFamily && (pid == nil || $0.labels.pid == pid)
                    && ($0.totalBytes > 0 || healthColumns)  // without -R, as the original: rows that moved bytes
            }
            if !members.isEmpty { tables.append(table(family: tableFamily, rows: members)) }
        }
        text += tables.joined(separator: "\n")
        return text
    }

    /// The header and up to `maxRows` sorted rows of one family, each line ending in a newline.
    public func table(family: AddressFamily, rows: [TopRow]) -> String {
        let shown = sorted(rows).prefix(maxRows)
        let addressWidth = family == .ipv4 ? 21 : 32
        let pidWidth = max(6, shown.map { String($0.labels.pid).count }.max() ?? 0)
        func line(_ pid: String, _ comm: String, _ local: String, _ remote: String, _ rx: String, _ tx: String,
                  _ health: (retrans: String, rtt: String)) -> String {
            var text = left(pid, pidWidth) + " " + left(comm, 12) + " " + left(local, addressWidth) + " "
                + left(remote, addressWidth) + " " + right(rx, 6) + " " + right(tx, 6)
            if healthColumns { text += " " + right(health.retrans, 7) + " " + right(health.rtt, 6) }
            return text + "\n"
        }
        let suffix = family == .ipv4 ? "" : "6"
        var text = line("PID", "COMM", "LADDR" + suffix, "RADDR" + suffix, "RX_KB", "TX_KB", ("RETRANS", "RTT_MS"))
        for row in shown {
            let labels = row.labels
            text += line(
                String(labels.pid), String(Self.displayName(labels.comm).prefix(12)),
                "\(labels.localAddress):\(labels.localPort)", "\(labels.remoteAddress):\(labels.remotePort)",
                String(row.receivedBytes / 1024), String(row.sentBytes / 1024),
                (row.retransmittedSegments.map { String($0) } ?? "-", Self.millisecondsText(row.smoothedRTTMicroseconds)))
        }
        return text
    }

    /// Largest first by the sort key, then by total (then, with -R, by
    /// retransmits); ties by pid, name and addresses so that the output is
    /// deterministic.
    public func sorted(_ rows: [TopRow]) -> [TopRow] {
        func key(_ row: TopRow) -> UInt64 {
            switch sort {
            case .all: row.totalBytes
            case .sent: row.sentBytes
            case .received: row.receivedBytes
            }
        }
        return rows.sorted { a, b in
            if key(a) != key(b) { return key(a) > key(b) }
            if a.totalBytes != b.totalBytes { return a.totalBytes > b.totalBytes }
            if healthColumns, a.retransmittedSegments != b.retransmittedSegments {  // shown: more first
                return (a.retransmittedSegments ?? 0) > (b.retransmittedSegments ?? 0)
            }
            let x = a.labels, y = b.labels
            if x.pid != y.pid { return x.pid < y.pid }
            if x.comm != y.comm { return x.comm.lexicographicallyPrecedes(y.comm) }
            if x.localAddress != y.localAddress { return x.localAddress < y.localAddress }
            if x.localPort != y.localPort { return x.localPort < y.localPort }
            if x.remoteAddress != y.remoteAddress { return x.remoteAddress < y.remoteAddress }
            return x.remotePort < y.remotePort
        }
    }

    /// Microseconds as milliseconds with one decimal, rounded half up
    /// (80812 → "80.8"); `-` when unknown.
    public static func millisecondsText(_ microseconds: UInt32?) -> String {
        guard let microseconds else { return "-" }
        let tenths = (UInt64(microseconds) + 50) / 100
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// A process name as one line of text: bytes that are not UTF-8 become
    /// U+FFFD, control characters (newline, tab, escape, DEL, C1) become `?`
    /// so that a name can neither break a row nor send terminal escapes.
    public static func displayName(_ comm: [UInt8]) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in String(decoding: comm, as: UTF8.self).unicodeScalars {
            let value = scalar.value
            scalars.append(value < 0x20 || (0x7F...0x9F).contains(value) ? "?" : scalar)
        }
        return String(scalars)
    }

    /// `HH:MM:SS loadavg: <the five fields of /proc/loadavg>`, as bcc's `%-8s loadavg: %s`.
    public static func summaryLine(time: String, loadavg: String) -> String {
        let fields = loadavg.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).prefix(5)
        return left(time, 8) + " loadavg: " + fields.joined(separator: " ")
    }

    /// The summary line with `--from`: this host's load says nothing about
    /// the exporter's host, so the line names the source instead.
    public static func sourceLine(time: String, source: String) -> String {
        left(time, 8) + " source: " + source
    }

    /// -L: the connection ends that closed in the interval, one line each in
    /// bcc tcplife's columns (`%-5d %-10.10s %-15s %-5d %-15s %-5d %5d %5d
    /// %.2f`): bytes over the end's whole life in KB, the lifetime in ms
    /// (established → closed; `-` when its establishment was not seen, as for
    /// a failed connect). Empty when none closed; `family` as -4/-6.
    public static func lifetimeLines(_ closed: [ConnectionSample], family: AddressFamily?) -> String {
        let ends = closed.filter { family == nil || $0.labels.family == family }
        guard !ends.isEmpty else { return "" }
        var text = "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS\n"
        for end in ends {
            let labels = end.labels
            let lifetime = end.lifecycle.lifetimeMicroseconds
            let milliseconds = lifetime == 0 ? "-" : hundredthsText(lifetime)
            text += left("\(labels.pid)", 5) + " " + left(String(displayName(labels.comm).prefix(10)), 10) + " "
                + left(labels.localAddress, 15) + " " + left("\(labels.localPort)", 5) + " "
                + left(labels.remoteAddress, 15) + " " + left("\(labels.remotePort)", 5) + " "
                + right("\(end.sentBytes / 1024)", 5) + " " + right("\(end.receivedBytes / 1024)", 5) + " "
                + milliseconds + "\n"
        }
        return text + "\n"
    }

    /// Microseconds as milliseconds with two decimals, rounded half up (3163849 → "3163.85").
    public static func hundredthsText(_ microseconds: UInt64) -> String {
        let hundredths = (microseconds + 5) / 10
        let fraction = hundredths % 100
        return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }

    /// `Tracing... Output every N secs. Hit Ctrl-C to end`, the original's first line.
    public static func startLine(interval: Int) -> String {
        "Tracing... Output every \(interval) secs. Hit Ctrl-C to end\n"
    }
}

private func left(_ text: String, _ width: Int) -> String {
    let count = text.count
    return count >= width ? text : text + String(repeating: " ", count: width - count)
}

private func right(_ text: String, _ width: Int) -> String {
    let count = text.count
    return count >= width ? text : String(repeating: " ", count: width - count) + text
}
