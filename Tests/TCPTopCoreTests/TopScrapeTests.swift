import Testing
import TCPTopCore

@Suite struct TopScrapeTests {
    @Test(arguments: [
        ("http://127.0.0.1:9435/metrics", TopMetricsURL(host: "127.0.0.1", port: 9435, path: "/metrics")),
        ("localhost", TopMetricsURL(host: "localhost", port: 9435, path: "/metrics")),
        ("db1:9100", TopMetricsURL(host: "db1", port: 9100, path: "/metrics")),
        ("HTTP://db1/", TopMetricsURL(host: "db1", port: 9435, path: "/metrics")),
        ("http://[::1]:8080/x/metrics?a=b", TopMetricsURL(host: "::1", port: 8080, path: "/x/metrics?a=b")),
        ("[fe80::1]", TopMetricsURL(host: "fe80::1", port: 9435, path: "/metrics")),
    ])
    func urls(text: String, url: TopMetricsURL) throws {
        #expect(try TopMetricsURL(parsing: text) == url)
    }

    @Test(arguments: ["http://", "ftp://h", "http://[::1", "http://h:0/", "http://h:x", "http://[::1]x"])
    func badURLs(text: String) {
        #expect(throws: TopUsageError.self) { try TopMetricsURL(parsing: text) }
    }

    @Test func description() {
        #expect(TopMetricsURL(host: "::1", port: 9435, path: "/metrics").description == "http://[::1]:9435/metrics")
    }

    @Test func badURLsSayWhy() {
        #expect(throws: TopUsageError("\"ftp://h\": only http:// and https:// URLs are supported")) { try TopMetricsURL(parsing: "ftp://h") }
    }

    @Test func exporterSeriesBecomeReadings() throws {
        let text = """
            # HELP tcptop_sent_bytes_total Bytes sent.
            # TYPE tcptop_sent_bytes_total counter
            tcptop_sent_bytes_total{pid="42",comm="we\\"ird\\nname",family="ipv4",laddr="127.0.0.1",lport="5000",raddr="127.0.0.1",rport="6000"} 2048
            tcptop_sent_bytes_total{pid="43",comm="v6",family="ipv6",laddr="::1",lport="1",raddr="::1",rport="2"} 1
            tcptop_sent_bytes_total{pid="__overflow__",comm="__overflow__",family="__overflow__",laddr="__overflow__",lport="__overflow__",raddr="__overflow__",rport="__overflow__"} 99
            tcptop_received_bytes_total{pid="42",comm="we\\"ird\\nname",family="ipv4",laddr="127.0.0.1",lport="5000",raddr="127.0.0.1",rport="6000"} 1024
            other_sent_bytes_total{pid="42",comm="x",family="ipv4",laddr="127.0.0.1",lport="5000",raddr="127.0.0.1",rport="6000"} 5
            tcptop_process_resident_memory_bytes 1e+07
            """
        let readings = TopScrape.readings(from: try ExpositionParser.parse(text))
        #expect(readings.count == 2)
        let first = try #require(readings.first)
        #expect(first.labels == ConnectionLabels(
            pid: 42, comm: Array("we\"ird\nname".utf8), family: .ipv4, localAddress: "127.0.0.1", localPort: 5000,
            remoteAddress: "127.0.0.1", remotePort: 6000))
        #expect(first.sentBytes == 2048 && first.receivedBytes == 1024 && !first.closed)
        #expect(readings[1].labels.family == .ipv6 && readings[1].sentBytes == 1 && readings[1].receivedBytes == 0)
    }

    @Test func baselineThenDeltasBetweenScrapes() throws {
        func readings(_ sent: Int, _ extra: String = "") throws -> [TopCounterReading<ConnectionLabels>] {
            TopScrape.readings(from: try ExpositionParser.parse("""
                tcptop_sent_bytes_total{pid="1",comm="a",family="ipv4",laddr="1.1.1.1",lport="1",raddr="2.2.2.2",rport="2"} \(sent)
                \(extra)
                """))
        }
        var counter = TopIntervalCounter<ConnectionLabels>()
        _ = counter.advance(try readings(5000))  // the baseline, not shown
        #expect(counter.advance(try readings(5000)).isEmpty)
        let rows = counter.advance(try readings(7048, """
            tcptop_received_bytes_total{pid="2",comm="b",family="ipv4",laddr="1.1.1.1",lport="3",raddr="2.2.2.2",rport="2"} 1024
            """))
        #expect(rows.map { [$0.labels.pid, UInt32($0.sentBytes), UInt32($0.receivedBytes)] } == [[1, 2048, 0], [2, 0, 1024]])
    }

    // -R: the exporter's health families.
    static let a = #"{pid="1",comm="a",family="ipv4",laddr="1.1.1.1",lport="1",raddr="2.2.2.2",rport="2"}"#
    static let b = #"{pid="2",comm="b",family="ipv6",laddr="::1",lport="3",raddr="::1",rport="4"}"#
    static let overflow = #"{pid="__overflow__",comm="__overflow__",family="__overflow__",laddr="__overflow__",lport="__overflow__",raddr="__overflow__",rport="__overflow__"}"#

    func health(_ text: String) throws -> [[UInt64?]] {
        TopScrape.readings(from: try ExpositionParser.parse(text)).map {
            [UInt64($0.labels.pid), $0.retransmittedSegments, $0.smoothedRTTMicroseconds.map(UInt64.init)]
        }
    }

    @Test func healthFamiliesFillTheReadings() throws {
        #expect(try health("""
            # TYPE tcptop_sent_bytes_total counter
            tcptop_sent_bytes_total\(Self.a) 10
            tcptop_sent_bytes_total\(Self.b) 20
            # TYPE tcptop_retransmitted_segments_total counter
            tcptop_retransmitted_segments_total\(Self.a) 95
            tcptop_retransmitted_segments_total\(Self.b) 0
            # TYPE tcptop_rtt_seconds gauge
            tcptop_rtt_seconds\(Self.a) 0.080812
            tcptop_rtt_seconds\(Self.b) 0.000012
            other_rtt_seconds\(Self.b) 9
            """) == [[1, 95, 80_812], [2, 0, 12]])
    }

    @Test func anAbsentRetransmitFamilyIsUnknownNotZero() throws {
        // An exporter whose kernel has no retransmit hook; b has no RTT either.
        #expect(try health("""
            tcptop_sent_bytes_total\(Self.a) 10
            tcptop_sent_bytes_total\(Self.b) 20
            tcptop_rtt_seconds\(Self.a) 0.0405
            """) == [[1, nil, 40_500], [2, nil, nil]])
        // With the family, a series without its own sample retransmitted nothing.
        #expect(try health("""
            tcptop_sent_bytes_total\(Self.a) 10
            tcptop_sent_bytes_total\(Self.b) 20
            tcptop_retransmitted_segments_total\(Self.overflow) 7
            """) == [[1, 0, nil], [2, 0, nil]])
    }

    @Test func badHealthValuesAreSkipped() throws {
        #expect(try health("""
            tcptop_sent_bytes_total\(Self.a) 10
            tcptop_retransmitted_segments_total\(Self.a) -1
            tcptop_rtt_seconds\(Self.a) NaN
            tcptop_sent_bytes_total\(Self.b) 20
            tcptop_retransmitted_segments_total\(Self.b) 3
            tcptop_rtt_seconds\(Self.b) 5000
            """) == [[1, 0, nil], [2, 3, nil]])
    }

    @Test func retransmitsBetweenScrapes() throws {
        func readings(_ retransmits: Int) throws -> [TopCounterReading<ConnectionLabels>] {
            TopScrape.readings(from: try ExpositionParser.parse("""
                tcptop_sent_bytes_total\(Self.a) 4096
                tcptop_retransmitted_segments_total\(Self.a) \(retransmits)
                tcptop_rtt_seconds\(Self.a) 0.0808
                """))
        }
        var counter = TopIntervalCounter<ConnectionLabels>()
        _ = counter.advance(try readings(90))  // the baseline
        let rows = counter.advance(try readings(95))
        #expect(rows.map { [$0.sentBytes, $0.retransmittedSegments, $0.smoothedRTTMicroseconds.map(UInt64.init)] }
            == [[0, 5, 80_800]])
    }
}
