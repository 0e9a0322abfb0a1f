import Foundation
import TCPTopBPF

/// One line of the result table. `met` is nil for rows without a target.
struct Row {
    var figure: String
    var measured: String
    var target: String = "—"
    var met: Bool? = nil
    /// The figure could not be measured at all.
    var failed = false

    /// A row that only reports an error (the figure could not be measured).
    static func failed(_ figure: String, _ error: Error) -> Row {
        Row(figure: figure, measured: "ERROR: \(error)", target: "—", met: false, failed: true)
    }
}

enum Table {
    static func header(quick: Bool) -> String {
        let date = ISO8601DateFormatter().string(from: Date())
        return """
            tcptop-bench \(date)  kernel \(kernelRelease())  \(cpuModel())
            ratios measured alternately in one run (tracer on/off); times are medians of rounds\(quick ? "  [--quick: fewer, shorter rounds]" : "")
            """
    }

    static func render(_ rows: [Row]) -> String {
        let titles = ["figure", "measured", "target", "met?"]
        let cells = rows.map { [$0.figure, $0.measured, $0.target, $0.met.map { $0 ? "yes" : "NO" } ?? "—"] }
        var widths = titles.map(\.count)
        for row in cells {
            for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: " | ").trimmingCharacters(in: .whitespaces)
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "-+-")
        return ([line(titles), rule] + cells.map(line)).joined(separator: "\n")
    }
}

// MARK: Number formatting

func format(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }

func formatBytes(_ bytes: UInt64) -> String { format(Double(bytes) / 1_048_576) + " MiB" }

func formatSeconds(_ seconds: Double) -> String {
    if seconds < 1e-3 { return format(seconds * 1e6) + " µs" }
    if seconds < 1 { return format(seconds * 1e3) + " ms" }
    return format(seconds, 2) + " s"
}

/// "592.7k sends/s", "2.09 GB/s".
func formatRate(_ perSecond: Double, unit: String) -> String {
    let (value, prefix): (Double, String) =
        perSecond >= 1e9 ? (perSecond / 1e9, "G") : perSecond >= 1e6 ? (perSecond / 1e6, "M")
        : perSecond >= 1e3 ? (perSecond / 1e3, "k") : (perSecond, "")
    let number = format(value, value < 100 ? 2 : 1)
    return unit == "B" ? "\(number) \(prefix)B/s" : "\(number)\(prefix) \(unit)/s"
}

/// 1000 → "1k", 1_000_000 → "1M".
func formatCount(_ count: Int) -> String {
    if count >= 1_000_000 && count % 1_000_000 == 0 { return "\(count / 1_000_000)M" }
    if count >= 1000 && count % 1000 == 0 { return "\(count / 1000)k" }
    return "\(count)"
}
