import Testing
import TCPTopCore

/// A table row with readable defaults.
func topRow(
    pid: UInt32, comm: String = "sshd", family: AddressFamily = .ipv4,
    laddr: String = "100.66.3.172", lport: UInt16 = 22, raddr: String = "100.127.69.165", rport: UInt16 = 6684,
    sent: UInt64, received: UInt64, retrans: UInt64? = nil, rtt: UInt32? = nil
) -> TopRow {
    TopRow(
        labels: ConnectionLabels(pid: pid, comm: Array(comm.utf8), family: family, localAddress: laddr,
                                 localPort: lport, remoteAddress: raddr, remotePort: rport),
        sentBytes: sent, receivedBytes: received, retransmittedSegments: retrans, smoothedRTTMicroseconds: rtt)
}

/// Golden text for the renderer. The expected tables were produced with
/// Python's `%` formatting and bcc tcptop's own format strings
/// (`"%-6d %-12.12s %-21s %-21s %6d %6d"`, 32-wide for IPv6).
@Suite struct TopRenderingTests {
    let mixed = [
        topRow(pid: 14374, rport: 25219, sent: 0, received: 1024),
        topRow(pid: 16647, sent: 2149 * 1024 + 1023, received: 1023),
        topRow(pid: 16681, family: .ipv6, laddr: "fe80::8a3:9dff:fed5:6b19", lport: 22,
               raddr: "fe80::8a3:9dff:fed5:6b19", rport: 16606, sent: 2048, received: 1024),
        topRow(pid: 16648, comm: "kworker-longn", sent: 1024, received: 3 * 1024),
    ]

    @Test func screenWithSummaryAndBothTables() {
        let text = TopScreen().render(
            rows: mixed, summary: TopScreen.summaryLine(time: "19:46:24", loadavg: "1.86 2.67 2.91 3/362 16681\n"),
            clear: false)
        #expect(text == """

            19:46:24 loadavg: 1.86 2.67 2.91 3/362 16681

            PID    COMM         LADDR                 RADDR                  RX_KB  TX_KB
            16647  sshd         100.66.3.172:22       100.127.69.165:6684        0   2149
            16648  kworker-long 100.66.3.172:22       100.127.69.165:6684        3      1
            14374  sshd         100.66.3.172:22       100.127.69.165:25219       1      0

            PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB
            16681  sshd         fe80::8a3:9dff:fed5:6b19:22      fe80::8a3:9dff:fed5:6b19:16606        1      2

            """)
    }

    @Test func clearingAndNoSummary() {
        let rows = [topRow(pid: 1, sent: 1024, received: 0)]
        #expect(TopScreen().render(rows: rows, summary: nil, clear: true) == """
            \u{1B}[H\u{1B}[2JPID    COMM         LADDR                 RADDR                  RX_KB  TX_KB
            1      sshd         100.66.3.172:22       100.127.69.165:6684        0      1

            """)
        // -C -S: the blank line the original printed instead of clearing, then the table.
        #expect(TopScreen().render(rows: rows, summary: nil, clear: false).hasPrefix("\nPID "))
    }

    @Test func anIntervalWithoutTrafficHasOnlyTheSummary() {
        #expect(TopScreen().render(rows: [], summary: "12:00:00 loadavg: 0.00 0.00 0.00 1/1 1", clear: false)
            == "\n12:00:00 loadavg: 0.00 0.00 0.00 1/1 1\n\n")
    }

    @Test func onlyIPv6HasNoTableBeforeIt() {
        let text = TopScreen().render(rows: mixed.filter { $0.labels.family == .ipv6 }, summary: nil, clear: false)
        #expect(text.hasPrefix("\nPID    COMM         LADDR6 "))
        #expect(!text.contains("LADDR "))
    }

    @Test(arguments: [(UInt64(0), "0"), (1023, "0"), (1024, "1"), (2047, "1"), (2048, "2"), (10_485_760, "10240")])
    func kilobytesAreRoundedDown(bytes: UInt64, kilobytes: String) {
        let table = TopScreen().table(family: .ipv4, rows: [topRow(pid: 1, sent: bytes, received: bytes)])
        let fields = table.split(separator: "\n")[1].split(separator: " ")
        #expect(fields.suffix(2) == [Substring(kilobytes), Substring(kilobytes)])
    }

    @Test func sortsByTotalThenDeterministically() {
        let rows = [
            topRow(pid: 30, sent: 500, received: 500),
            topRow(pid: 20, sent: 0, received: 3000),
            topRow(pid: 10, rport: 2, sent: 1000, received: 0),
            topRow(pid: 10, rport: 1, sent: 1000, received: 0),
            topRow(pid: 5, sent: 2000, received: 0),
        ]
        func order(_ sort: TopSort) -> [String] {
            TopScreen(sort: sort).sorted(rows).map { "\($0.labels.pid):\($0.labels.remotePort)" }
        }
        #expect(order(.all) == ["20:6684", "5:6684", "10:1", "10:2", "30:6684"])
        #expect(order(.sent) == ["5:6684", "10:1", "10:2", "30:6684", "20:6684"])
        #expect(order(.received) == ["20:6684", "30:6684", "5:6684", "10:1", "10:2"])
        // Order of the input does not matter.
        #expect(TopScreen().sorted(rows.reversed()) == TopScreen().sorted(rows))
    }

    @Test func rowLimitAppliesPerTable() {
        let v4 = (1...25).map { topRow(pid: UInt32($0), sent: UInt64($0) * 1024, received: 0) }
        let v6 = (1...25).map { topRow(pid: UInt32($0), family: .ipv6, laddr: "::1", raddr: "::1", sent: UInt64($0), received: 0) }
        let text = TopScreen().render(rows: v4 + v6, summary: nil, clear: false)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2 + 2 * 20)
        #expect(lines[1].hasPrefix("25 "))  // the biggest are kept
        #expect(lines[20].hasPrefix("6 "))
        #expect(TopScreen(maxRows: 3).table(family: .ipv4, rows: v4).split(separator: "\n").count == 4)
    }

    @Test func longNamesAreCutToTwelveCharacters() {
        let table = TopScreen().table(family: .ipv4, rows: [topRow(pid: 7, comm: "abcdefghijklmno", sent: 1, received: 0)])
        #expect(table.split(separator: "\n")[1].hasPrefix("7      abcdefghijkl 100.66.3.172:22 "))
    }

    @Test func namesStayOneLineOfText() {
        #expect(TopScreen.displayName(Array("a\nb\tc\u{1B}[2J".utf8)) == "a?b?c?[2J")
        #expect(TopScreen.displayName([0x66, 0xFF, 0x6F]) == "f\u{FFFD}o")
        #expect(TopScreen.displayName(Array("naïve".utf8)) == "naïve")
        #expect(TopScreen.displayName([0x7F, 0xC2, 0x85]) == "??")  // DEL and C1 NEL
    }

    @Test func wideProcessIDsWidenTheColumnForTheWholeTable() {
        let table = TopScreen().table(family: .ipv4, rows: [
            topRow(pid: 4_194_304, sent: 2048, received: 0), topRow(pid: 12, sent: 1024, received: 0),
        ])
        #expect(table == """
            PID     COMM         LADDR                 RADDR                  RX_KB  TX_KB
            4194304 sshd         100.66.3.172:22       100.127.69.165:6684        0      2
            12      sshd         100.66.3.172:22       100.127.69.165:6684        0      1

            """)
    }

    @Test func ipv6ColumnsAreAligned() {
        let table = TopScreen().table(family: .ipv6, rows: [
            topRow(pid: 1, family: .ipv6, laddr: "::1", lport: 1, raddr: "::1", rport: 65535, sent: 1024, received: 0),
            topRow(pid: 2, family: .ipv6, laddr: "2001:db8::1", lport: 443, raddr: "::ffff:10.0.0.1", rport: 5, sent: 0, received: 2048),
        ])
        let lines = table.split(separator: "\n").map(String.init)
        #expect(lines == [
            "PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB",
            "2      sshd         2001:db8::1:443                  ::ffff:10.0.0.1:5                     2      0",
            "1      sshd         ::1:1                            ::1:65535                             0      1",
        ])
        #expect(Set(lines.map(\.count)).count == 1)
    }

    @Test func familyAndPIDFilters() {
        let v6Only = TopScreen(family: .ipv6).render(rows: mixed, summary: nil, clear: false)
        #expect(!v6Only.contains("LADDR ") && v6Only.contains("16681"))
        let v4Only = TopScreen(family: .ipv4).render(rows: mixed, summary: nil, clear: false)
        #expect(!v4Only.contains("LADDR6") && v4Only.contains("16647"))
        let onePID = TopScreen(pid: 16648).render(rows: mixed, summary: nil, clear: false)
        #expect(onePID.split(separator: "\n").map { $0.prefix(6) } == ["PID   ", "16648 "])
    }

    @Test func summaryAndStartLines() {
        #expect(TopScreen.summaryLine(time: "20:27:12", loadavg: "0.08 0.02 0.17 2/367 17342\n")
            == "20:27:12 loadavg: 0.08 0.02 0.17 2/367 17342")
        #expect(TopScreen.sourceLine(time: "20:27:12", source: "http://db1:9435/metrics")
            == "20:27:12 source: http://db1:9435/metrics")
        #expect(TopScreen.startLine(interval: 5) == "Tracing... Output every 5 secs. Hit Ctrl-C to end\n")
    }

    // -R. Expected rows made with Python's `%` and the format
    // "%-6s %-12.12s %-21s %-21s %6s %6s %7s %6s" (32-wide for IPv6).
    let health = [
        topRow(pid: 16647, sent: 2149 * 1024, received: 1023, retrans: 37, rtt: 80812),
        topRow(pid: 31997, comm: "curl", laddr: "10.0.0.2", lport: 33154, raddr: "10.0.0.1", rport: 8080,
               sent: 0, received: 3 * 1024, retrans: 0),
        topRow(pid: 14374, rport: 25219, sent: 0, received: 0, retrans: 4, rtt: 1050),
        topRow(pid: 100, sent: 0, received: 0, retrans: 9, rtt: 200_049),
        topRow(pid: 16681, family: .ipv6, laddr: "fe80::8a3:9dff:fed5:6b19", lport: 22,
               raddr: "fe80::8a3:9dff:fed5:6b19", rport: 16606, sent: 2048, received: 1024),
        topRow(pid: 16679, comm: "ssh", family: .ipv6, laddr: "fe80::8a3:9dff:fed5:6b19", lport: 16606,
               raddr: "fe80::8a3:9dff:fed5:6b19", rport: 22, sent: 1024, received: 1024,
               retrans: 12_345_678, rtt: 1_234_567),
    ]

    @Test func healthColumnsInBothTables() {
        let text = TopScreen(healthColumns: true).render(rows: health, summary: "19:46:24 loadavg: 1.86 2.67 2.91 3/362 16681", clear: false)
        #expect(text == """

            19:46:24 loadavg: 1.86 2.67 2.91 3/362 16681

            PID    COMM         LADDR                 RADDR                  RX_KB  TX_KB RETRANS RTT_MS
            16647  sshd         100.66.3.172:22       100.127.69.165:6684        0   2149      37   80.8
            31997  curl         10.0.0.2:33154        10.0.0.1:8080              3      0       0      -
            100    sshd         100.66.3.172:22       100.127.69.165:6684        0      0       9  200.0
            14374  sshd         100.66.3.172:22       100.127.69.165:25219       0      0       4    1.1

            PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB RETRANS RTT_MS
            16681  sshd         fe80::8a3:9dff:fed5:6b19:22      fe80::8a3:9dff:fed5:6b19:16606        1      2       -      -
            16679  ssh          fe80::8a3:9dff:fed5:6b19:16606   fe80::8a3:9dff:fed5:6b19:22           1      1 12345678 1234.6

            """)
    }

    @Test func withoutTheOptionTheOutputIsTheOriginals() {
        // The same rows: no health columns, and rows that only retransmitted are not shown.
        #expect(TopScreen().render(rows: health, summary: nil, clear: false) == """

            PID    COMM         LADDR                 RADDR                  RX_KB  TX_KB
            16647  sshd         100.66.3.172:22       100.127.69.165:6684        0   2149
            31997  curl         10.0.0.2:33154        10.0.0.1:8080              3      0

            PID    COMM         LADDR6                           RADDR6                            RX_KB  TX_KB
            16681  sshd         fe80::8a3:9dff:fed5:6b19:22      fe80::8a3:9dff:fed5:6b19:16606        1      2
            16679  ssh          fe80::8a3:9dff:fed5:6b19:16606   fe80::8a3:9dff:fed5:6b19:22           1      1

            """)
    }

    @Test func onlyRetransmittedRowsNeedTheOption() {
        let quiet = [topRow(pid: 5, sent: 0, received: 0, retrans: 3, rtt: 40_000)]
        #expect(TopScreen().render(rows: quiet, summary: nil, clear: false) == "\n")
        #expect(TopScreen(healthColumns: true).render(rows: quiet, summary: nil, clear: false).hasSuffix(
            "5      sshd         100.66.3.172:22       100.127.69.165:6684        0      0       3   40.0\n"))
    }

    @Test(arguments: [
        (UInt32?.none, "-"), (0, "0.0"), (49, "0.0"), (50, "0.1"), (80812, "80.8"), (80850, "80.9"),
        (1_234_567, "1234.6"), (UInt32.max, "4294967.3"),
    ] as [(UInt32?, String)])
    func millisecondsWithOneDecimal(microseconds: UInt32?, text: String) {
        #expect(TopScreen.millisecondsText(microseconds) == text)
    }

    /// -L: tcplife's columns, whole-life KB, the lifetime in ms with two
    /// decimals, `-` when not known; -4/-6 filter; nothing when none closed.
    @Test func lifetimeLinesAreTcplifes() {
        var served = sample(cookie: 1, pid: 4242, comm: "web-backend", laddr: "10.77.0.2", lport: 8080,
                            raddr: "10.77.0.1", rport: 51234, sent: 2_097_152, received: 1500, closed: true)
        served.lifecycle = ConnectionLifecycle(role: .server, established: true, lifetimeMicroseconds: 3_163_849)
        var refused = sample(cookie: 2, pid: 7, comm: "curl", laddr: "10.77.0.1", lport: 40000, raddr: "10.77.0.2",
                             rport: 1, sent: 0, received: 0, closed: true)
        refused.lifecycle = ConnectionLifecycle(role: .client, connectError: 111)
        let v6 = sample(cookie: 3, pid: 9, comm: "ssh", family: .ipv6, laddr: "::1", lport: 22, raddr: "::1", rport: 50000,
                        sent: 1024, received: 4096, closed: true)
        #expect(TopScreen.lifetimeLines([served, refused, v6], family: .ipv4) == """
            PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS
            4242  web-backen 10.77.0.2       8080  10.77.0.1       51234  2048     1 3163.85
            7     curl       10.77.0.1       40000 10.77.0.2       1         0     0 -


            """)
        #expect(TopScreen.lifetimeLines([v6], family: nil).contains("\n9     ssh        ::1             22    ::1             50000     1     4 -\n"))
        #expect(TopScreen.lifetimeLines([], family: nil).isEmpty && TopScreen.lifetimeLines([v6], family: .ipv4).isEmpty)
    }

    @Test(arguments: [(UInt64(1), "0.00"), (5, "0.01"), (310, "0.31"), (3_163_849, "3163.85"), (1_000_000, "1000.00")])
    func lifetimeMillisecondsWithTwoDecimals(microseconds: UInt64, text: String) {
        #expect(TopScreen.hundredthsText(microseconds) == text)
    }
}
