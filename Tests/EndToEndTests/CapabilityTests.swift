import Foundation
import Glibc
import TCPTopBPF
import TCPTopCore
import Testing

/// Least privilege after attach: the daemon, started as root with every
/// capability, keeps only what reading the maps needs on this kernel, in
/// every thread (CapEff, CapPrm, CapBnd, CapAmb of /proc/<pid>/task/*), as
/// its startup log says, and its scrapes stay exact; for every plan this
/// kernel allows.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct CapabilityTests {
    /// What reading needs, measured: nothing on 6.1 (Debian 12's guest) and
    /// on this host's 6.18; CAP_BPF on 5.10 with kernel.unprivileged_bpf_disabled
    /// set (Debian 11's guest: every bpf() command checked it there; a 2022
    /// change limited the check to creating objects). Between 5.10 and 6.1
    /// not measured: not expected here.
    static var expectedKept: String {
        let parts = kernelRelease().split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        let recent = parts.count == 2 && (parts[0], parts[1]) >= (6, 1)
        let disabled = (try? String(contentsOfFile: "/proc/sys/kernel/unprivileged_bpf_disabled", encoding: .utf8))
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) != "0" } ?? true
        return recent || !disabled ? "none" : "CAP_BPF"
    }

    @Test(arguments: KernelPlans.allowed)
    func everyThreadKeepsOnlyWhatReadingNeeds(_ plan: KernelPlans.Combination) throws {
        let daemon = try ExporterProcess(arguments: ["--bpf.attach-mode=\(plan.hooks.rawValue)", "--bpf.read-path=\(plan.readPath.rawValue)"])
        try daemon.waitReady()
        let line = try #require(daemon.log.split(separator: "\n").first { $0.contains("msg=\"capabilities dropped\"") },
                                "no capability line in \(daemon.log)")
        #expect(line.contains("kept=\(Self.expectedKept) "), "\(line)")
        #expect(line.contains("threads=1"), "\(line)")
        #expect(line.contains("bounding_set=narrowed"), "\(line)")

        // Scrapes exact after the drop (the HTTP threads started since).
        let exchange = try TrafficPeers.exchange(family: "4", clientName: "tt-capclient", serverName: "tt-capserver",
                                                 clientSends: 300_007, serverSends: 1_234, seed: 7)
        let samples = try daemon.metrics()
        let client = ["pid": "\(exchange.clientPID)", "lport": "\(exchange.clientPort)", "rport": "\(exchange.serverPort)"]
        let server = ["pid": "\(exchange.serverPID)", "lport": "\(exchange.serverPort)", "rport": "\(exchange.clientPort)"]
        #expect(value(samples, "tcptop_sent_bytes_total", client) == 300_007)
        #expect(value(samples, "tcptop_received_bytes_total", client) == 1_234)
        #expect(value(samples, "tcptop_sent_bytes_total", server) == 1_234)
        #expect(value(samples, "tcptop_received_bytes_total", server) == 300_007)
        #expect(value(samples, "tcptop_exporter_kernel_read_errors_total", [:]) == 0)
        // A poll after the peers closed (the closed map read and emptied) still works.
        try daemon.waitForMetrics("the closed peers after a poll", timeout: 5) { samples in
            value(samples, "tcptop_exporter_kernel_read_errors_total", [:]) == 0
                && value(samples, "tcptop_received_bytes_total", server) == 300_007
        }

        let expected: UInt64 = Self.expectedKept == "none" ? 0 : 1 << 39
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.process.processIdentifier)/task")
        #expect(tasks.count > 1, "the HTTP and timer threads run")
        for task in tasks {
            // A connection's thread may have ended since the listing.
            guard let status = try? String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/task/\(task)/status",
                                           encoding: .utf8) else { continue }
            for field in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
                #expect(capabilityField(status, field) == (field == "CapEff" || field == "CapPrm" ? expected : 0),
                        "thread \(task) \(field)")
            }
            #expect(capabilityField(status, "CapBnd") == expected, "thread \(task) CapBnd")
        }
        daemon.signal(SIGTERM)
        try daemon.waitNotify("STOPPING=1")
        #expect(try daemon.waitExit() == 0)
        #expect(daemon.log.contains("BPF programs detached"))
    }
}

func capabilityField(_ status: String, _ field: String) -> UInt64? {
    status.split(separator: "\n").first { $0.hasPrefix(field + ":") }
        .flatMap { UInt64($0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
}
