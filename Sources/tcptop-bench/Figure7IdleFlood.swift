import Foundation
import Glibc

/// Figure 7: a scrape of the real daemon while 10,000 connections to its
/// listener sit idle (the first 100 of them trickling a byte of a request
/// head before each scrape), as an idle flood does.
enum IdleFloodFigure {
    static let connections = 10_000

    static func run(_ settings: Settings) -> [Row] {
        // Both ends live on this host: the bench's and the daemon's (which inherits this limit).
        raiseOpenFileLimit(to: rlim_t(connections + 1024))
        var flood: [Int32] = []
        defer { flood.forEach { _ = close($0) } }
        do {
            let daemon = try DaemonUnderTest()
            defer { daemon.stop() }
            let restingRSS = daemon.restingRSS
            for _ in 0..<connections { flood.append(try Loopback.connect(port: daemon.port)) }
            _ = try daemon.scrape()  // the daemon has accepted the flood once this is answered; the first read counts its connections
            var times: [Double] = []
            var byte: UInt8 = UInt8(ascii: "G")
            for _ in 0..<settings.rounds {
                for fd in flood.prefix(100) { _ = send(fd, &byte, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                times.append(try daemon.timedScrape().seconds)
            }
            let floodRSS = daemon.restingRSS
            let time = median(times)
            let perConnection = Double(Int64(floodRSS) - Int64(restingRSS)) / Double(connections)
            return [
                Row(figure: "7 scrape, \(connections) idle connections", measured: "\(formatSeconds(time)) (max \(formatSeconds(times.max() ?? 0)))",
                    target: "≤ 100 ms", met: time <= 0.1),
                Row(figure: "7 RSS with the idle flood", measured: "\(formatBytes(floodRSS)) (\(format(perConnection / 1024, 1)) KiB per connection, scrape text included)"),
            ]
        } catch {
            return [Row.failed("7 idle flood", error)]
        }
    }
}
