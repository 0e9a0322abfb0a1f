import Foundation
@testable import TCPTopBPF
import TestChildProcess
import Testing

/// The capability check reads /proc/self/status; these are its rules on
/// fixed texts (no root needed).
struct PreflightTests {
    static func status(_ capEff: String) -> String { "Name:\tx\nCapInh:\t0\nCapEff:\t\(capEff)\nCapBnd:\t1ff\n" }

    @Test(arguments: [
        ("000001ffffffffff", nil),                                  // root: everything
        ("0000000000200000", nil),                                  // CAP_SYS_ADMIN alone implies both
        ("000000c000000000", nil),                                  // CAP_BPF + CAP_PERFMON
        ("0000008000000000", "missing capability CAP_PERFMON"),     // CAP_BPF only
        ("0000004000000000", "missing capability CAP_BPF"),         // CAP_PERFMON only
        ("0000000000000000", "missing capability CAP_BPF and CAP_PERFMON"),
    ] as [(String, String?)])
    func namesTheMissingCapability(capEff: String, expected: String?) {
        do {
            try Preflight.checkCapabilities(statusText: Self.status(capEff))
            #expect(expected == nil)
        } catch {
            #expect(expected != nil && "\(error)".hasPrefix(expected!), "\(error)")
        }
    }

    /// What KernelHooks.probe() reads through libbpf, checked against
    /// bpftool's dump of the same BTF: the facts of whatever kernel this is.
    @Test func theProbeAgreesWithBpftool() throws {
        let hooks = try KernelHooks.probe()
        let dump = try bpftoolBTFDump()
        var types: [String: String] = [:] // "[id]" -> line
        var named: [String: String] = [:] // "KIND 'name'" -> line
        for line in dump.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 2)
            guard fields.count >= 3 else { continue }
            types[String(fields[0])] = String(line)
            named["\(fields[1]) \(fields[2].split(separator: " ").first ?? "")"] = String(line)
        }
        func arguments(_ function: String) -> Int? {
            guard let line = named["FUNC '\(function)'"],
                  let id = line.split(separator: " ").first(where: { $0.hasPrefix("type_id=") })?.dropFirst(8),
                  let proto = types["[\(id)]"],
                  let vlen = proto.split(separator: " ").first(where: { $0.hasPrefix("vlen=") })?.dropFirst(5)
            else { return nil }
            return Int(vlen)
        }
        /// typedef btf_trace_X → pointer → prototype, whose first argument is the probe's data.
        func tracepointArguments(_ name: String) -> Int? {
            func target(_ line: String?) -> String? {
                line?.split(separator: " ").first(where: { $0.hasPrefix("type_id=") }).map { types["[\($0.dropFirst(8))]"] } ?? nil
            }
            guard let proto = target(target(named["TYPEDEF 'btf_trace_\(name)'"])),
                  let vlen = proto.split(separator: " ").first(where: { $0.hasPrefix("vlen=") })?.dropFirst(5)
            else { return nil }
            return Int(vlen).map { $0 - 1 }
        }
        #expect(hooks.retransmitArguments == tracepointArguments("tcp_retransmit_skb"))
        #expect(hooks.stateTracepoint == (named["TYPEDEF 'btf_trace_inet_sock_set_state'"] != nil))
        #expect(hooks.resetTracepoints == (named["TYPEDEF 'btf_trace_tcp_send_reset'"] != nil
            && named["TYPEDEF 'btf_trace_tcp_receive_reset'"] != nil))
        let tracepoints = named["TYPEDEF 'btf_trace_sock_send_length'"] != nil
            && named["TYPEDEF 'btf_trace_sock_recv_length'"] != nil
        #expect(hooks.sendRecvTracepoints == tracepoints)
        #expect(hooks.destroyTracepoint == (named["TYPEDEF 'btf_trace_tcp_destroy_sock'"] != nil))
        #expect(hooks.tcpSendmsgArguments == arguments("tcp_sendmsg"))
        #expect(hooks.tcpRecvmsgArguments == arguments("tcp_recvmsg"))
        #expect(hooks.tcpSendpageArguments == arguments("tcp_sendpage"))
        #expect(hooks.storageIterator == (named["FUNC 'bpf_iter_bpf_sk_storage_map'"] != nil))
        print("kernel \(hooks.release): \(hooks)")
    }

    private func bpftoolBTFDump() throws -> String {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/bpftool")
        process.arguments = ["btf", "dump", "file", "/sys/kernel/btf/vmlinux"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile() // bpftool ends by itself: a file dump
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
