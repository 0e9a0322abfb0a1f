@testable import TCPTopBPF
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

    @Test func theRunningKernelHasTheHooks() throws {
        // This machine's kernel (6.18, BTF) has every tracepoint the tp_btf
        // programs need, and the functions the fexit ones would use.
        let hooks = try KernelHooks.probe()
        #expect(hooks.sendRecvTracepoints && hooks.destroyTracepoint)
        #expect(hooks.tcpSendmsgArguments == 3 && hooks.tcpRecvmsgArguments == 4)
        #expect(hooks.tcpSendpageArguments == nil, "tcp_sendpage is gone since 6.5")
    }
}
