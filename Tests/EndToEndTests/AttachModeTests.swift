import Foundation
import TCPTopBPF
import TCPTopCore
import Testing

/// Which plans a kernel's BTF makes possible, and how the tracer steps down
/// when the kernel refuses one: pure, over kernel facts as values.
struct AttachPlanTests {
    /// This host's kind (6.18), Debian 12 (6.1), Ubuntu 22.04 / RHEL 9 (5.15 / 5.14).
    static let linux618 = KernelHooks(release: "6.18", sendRecvTracepoints: true, destroyTracepoint: true,
                                      tcpSendmsgArguments: 3, tcpRecvmsgArguments: 4, tcpSendpageArguments: nil)
    static let linux61 = KernelHooks(release: "6.1.0-37-cloud-amd64", sendRecvTracepoints: false, destroyTracepoint: true,
                                     tcpSendmsgArguments: 3, tcpRecvmsgArguments: 5, tcpSendpageArguments: 5)
    static let linux515 = KernelHooks(release: "5.15.0", sendRecvTracepoints: false, destroyTracepoint: true,
                                      tcpSendmsgArguments: 3, tcpRecvmsgArguments: 6, tcpSendpageArguments: 5)

    static func names(_ plans: [AttachPlan]) -> [String] { plans.map(\.name) }

    /// The state-change and reset hooks follow the close hook's kind, where
    /// the kernel has their tracepoints.
    @Test func lifecycleHooksFollowTheCloseHook() throws {
        var kernel = Self.linux618
        kernel.stateTracepoint = true
        kernel.resetTracepoints = true
        for plan in try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel).plans {
            let expected: [BPFProgram] = plan.closeHooks == .tpBTF ? [.state, .sendReset, .receiveReset]
                : [.rawState, .rawSendReset, .rawReceiveReset]
            #expect(plan.programs.filter { expected.contains($0) || [.state, .rawState, .sendReset, .rawSendReset].contains($0) } == expected,
                    "\(plan.name)")
        }
        kernel.stateTracepoint = false
        kernel.resetTracepoints = false
        let without = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel).plans
        #expect(without.allSatisfy { !$0.programs.contains(.state) && !$0.programs.contains(.rawState) && !$0.programs.contains(.sendReset) })
    }

    /// tcp:tcp_retransmit_skb has (sk, skb) before 6.13 and (sk, skb, err)
    /// since: each plan takes the program of that signature, of its close
    /// hook's kind; a kernel without it gets no retransmit program.
    @Test(arguments: [(2, AttachPlan.Hooks.tpBTF, BPFProgram.retransmit), (3, .tpBTF, .retransmitErr),
                      (2, .rawTP, .rawRetransmit), (3, .rawTP, .rawRetransmitErr)])
    func theRetransmitHookFollowsTheCloseHookAndTheSignature(arguments: Int, close: AttachPlan.Hooks, program: BPFProgram) throws {
        var kernel = Self.linux618
        kernel.retransmitArguments = arguments
        let (plans, _) = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel)
        for plan in plans where plan.closeHooks == close {
            #expect(plan.programs.filter { "\($0)".lowercased().contains("retransmit") } == [program], "\(plan.name)")
        }
        kernel.retransmitArguments = nil
        let without = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel).plans
        #expect(without.allSatisfy { plan in !plan.programs.contains { "\($0)".lowercased().contains("retransmit") } })
    }

    @Test func withTheTracepointsEveryHookKindIsACandidateBestFirst() throws {
        let (plans, impossible) = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: Self.linux618)
        #expect(Self.names(plans) == [
            "tp_btf+storage_iterator", "tp_btf+storage_array", "tp_btf+socket_hash", "raw_tp+socket_hash",
            "fexit+storage_iterator", "fexit+storage_array", "fexit+socket_hash", "fexit+socket_hash (close hook raw_tp)",
            "kprobe+socket_hash", "kprobe+socket_hash (close hook raw_tp)",
        ])
        #expect(impossible.isEmpty)
        #expect(plans[0].programs == [.send, .recv, .destroy, .dump])
        #expect(plans[1].programs == [.send, .recv, .destroy])
        #expect(plans[2].programs == [.send, .recv, .destroy])
        #expect(plans[3].programs == [.rawSend, .rawRecv, .rawDestroy])
        #expect(plans[9].programs == [.kprobeSend, .kretprobeSend, .kprobeRecv, .kretprobeRecv, .rawDestroy, .rawThreadExit])
    }

    @Test func before63FexitComesFirstWithTheRightRecvmsgAndSendpage() throws {
        let (plans, impossible) = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: Self.linux61)
        #expect(plans.first?.name == "fexit+storage_iterator")
        #expect(plans.first?.programs == [.fexitSend, .fexitRecv5, .fexitSendpage, .destroy, .dump])
        #expect(impossible.count == 2 && impossible.allSatisfy { $0.contains("has no sock_send_length") })
        let (old, _) = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: Self.linux515)
        #expect(old.first?.programs == [.fexitSend, .fexitRecv6, .fexitSendpage, .destroy, .dump])
        // Before 5.19 kprobe mode reads the flags (MSG_PEEK) from the 5th argument.
        #expect(old.contains { $0.programs.contains(.kprobeRecv6) && $0.programs.contains(.kprobeSendpage) })
    }

    @Test func forcedChoicesNarrowTheCandidates() throws {
        let fexit = try AttachPlan.candidates(hooks: .fexit, readPath: .auto, kernel: Self.linux618).plans
        #expect(Self.names(fexit) == ["fexit+storage_iterator", "fexit+storage_array", "fexit+socket_hash",
                                      "fexit+socket_hash (close hook raw_tp)"])
        #expect(fexit[0].programs == [.fexitSend, .fexitRecv4, .destroy, .dump])
        let hash = try AttachPlan.candidates(hooks: .auto, readPath: .socketHash, kernel: Self.linux618).plans
        #expect(hash.allSatisfy { $0.readPath == .socketHash && !$0.programs.contains(.dump) })
        let storage = try AttachPlan.candidates(hooks: .auto, readPath: .storageIterator, kernel: Self.linux618).plans
        #expect(Self.names(storage) == ["tp_btf+storage_iterator", "fexit+storage_iterator"])
    }

    @Test func impossibleChoicesFailInOneLine() throws {
        var oddRecvmsg = Self.linux61
        oddRecvmsg.tcpRecvmsgArguments = 7
        var noDestroy = Self.linux618
        noDestroy.destroyTracepoint = false
        var noIterator = Self.linux618
        noIterator.storageIterator = false
        let cases: [(BPFAttachMode, BPFReadPath, KernelHooks, String)] = [
            (.tpBTF, .auto, Self.linux61, "tp_btf: kernel 6.1.0-37-cloud-amd64 has no sock_send_length"),
            (.fexit, .auto, oddRecvmsg, "fexit: kernel 6.1.0-37-cloud-amd64 has a 7-argument tcp_recvmsg (expected 4 to 6 arguments)"),
            (.auto, .auto, oddRecvmsg, "kprobe: kernel 6.1.0-37-cloud-amd64 has a 7-argument tcp_recvmsg"),
            (.rawTP, .storageIterator, Self.linux618, "raw_tp hooks cannot use socket storage"),
            (.tpBTF, .storageIterator, noIterator, "has no socket-storage iterator"),
            (.auto, .auto, noDestroy, "no tcp_destroy_sock tracepoint"),
        ]
        for (hooks, path, kernel, expected) in cases {
            let error = #expect(throws: TracerError.self) {
                try AttachPlan.candidates(hooks: hooks, readPath: path, kernel: kernel)
            }
            #expect(error?.description.contains(expected) == true, "\(hooks) \(path): \(error?.description ?? "")")
            #expect(error?.description.contains("\n") == false)
        }
    }

    /// The machines of this project: one allowed everything but fexit and
    /// kprobes; the next (2026-12-01) also refused the socket-storage
    /// iterator; the next may refuse tp_btf too.
    @Test func stepsDownOnlyPastWhatTheKernelRefused() throws {
        let plans = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: Self.linux618).plans
        var selection = PlanSelection(plans)
        let firstPlan = selection.next()
        let first = try #require(firstPlan)
        #expect(first.name == "tp_btf+storage_iterator")
        selection.refused(first, because: KernelRefusal(program: .dump, stage: .load, code: -EPERM))
        let secondPlan = selection.next()
        let second = try #require(secondPlan)
        #expect(second.name == "tp_btf+storage_array")
        selection.refused(second, because: KernelRefusal(program: .send, stage: .load, code: -EPERM))
        // tp_btf refused as a kind: its close hook too, so fexit's tp_btf-close plans are skipped.
        let thirdPlan = selection.next()
        let third = try #require(thirdPlan)
        #expect(third.name == "raw_tp+socket_hash")
        // raw_tp's send program refused alone (not its kind): raw_tp's close hook still serves fexit.
        var rawKindRefused = selection
        selection.refused(third, because: KernelRefusal(program: .rawSend, stage: .load, code: -EINVAL))
        let last = selection.next()
        #expect(last?.name == "fexit+socket_hash (close hook raw_tp)")
        #expect(selection.refusals.count == 3)
        // With raw_tp refused as a kind too, no close hook is left: nothing to try.
        rawKindRefused.refused(third, because: KernelRefusal(program: .rawSend, stage: .load, code: -EPERM))
        #expect(rawKindRefused.next() == nil)
        #expect(selection.refusals[0] == "tp_btf+storage_iterator: the kernel refused to load iter program tcptop_dump (Operation not permitted)")
    }

    /// A missing helper (EINVAL: bpf_sk_storage_get in tracing programs
    /// came in 5.11) gives up that program on that read path only.
    @Test func aMissingHelperGivesUpOneReadPathNotTheHookKind() throws {
        let plans = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: Self.linux515).plans
        var selection = PlanSelection(plans)
        let firstPlan = selection.next()
        let first = try #require(firstPlan)
        #expect(first.name == "fexit+storage_iterator")
        selection.refused(first, because: KernelRefusal(program: .fexitSend, stage: .load, code: -EINVAL))
        let secondPlan = selection.next()
        let second = try #require(secondPlan)
        #expect(second.name == "fexit+storage_array")
        selection.refused(second, because: KernelRefusal(program: .fexitSend, stage: .load, code: -EINVAL))
        let last = selection.next()
        #expect(last?.name == "fexit+socket_hash")
    }

    @Test func refusalTextsNameTheKindAndTheCause() {
        #expect(KernelRefusal(program: .fexitSend, stage: .load, code: -EPERM).refusesKind)
        #expect(!KernelRefusal(program: .fexitSend, stage: .load, code: -EINVAL).refusesKind)
        let kprobe = KernelRefusal(program: .kprobeSend, stage: .attach, code: -ENOENT)
        #expect(kprobe.kind == "kprobe" && kprobe.description.contains("CONFIG_KPROBES"))
        #expect(KernelRefusal(program: .rawDestroy, stage: .load, code: -EPERM).kind == "raw_tp")
    }

    @Test func modeNamesAreTheConfigValues() {
        #expect(BPFAttachMode.allCases.map(\.rawValue) == ["auto", "tp_btf", "raw_tp", "fexit", "kprobe"])
        #expect(BPFReadPath.allCases.map(\.rawValue) == ["auto", "storage_iterator", "storage_array", "socket_hash"])
        // Every hook kind and read path of a plan can be forced by its name
        // (configValue relies on it).
        #expect(AttachPlan.Hooks.allCases.allSatisfy { BPFAttachMode(rawValue: $0.rawValue) != nil })
        #expect(AttachPlan.ReadPath.allCases.allSatisfy { BPFReadPath(rawValue: $0.rawValue) != nil })
    }
}

/// The plans on the running kernel, with real BPF: whatever this kernel
/// allows is what gets used, and every plan it allows counts exactly.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct AttachModeTests {
    @Test func autoTakesTheFirstPlanThisKernelAllows() throws {
        let tracer = try TCPTracer.start(.init())
        let kernel = try KernelHooks.probe()
        let plans = try AttachPlan.candidates(hooks: .auto, readPath: .auto, kernel: kernel).plans
        let index = try #require(plans.firstIndex(of: tracer.plan), "\(tracer.plan.name)")
        print("auto on \(kernel.release): \(tracer.attachReason)")
        // Every better plan is refused by this kernel when forced.
        for better in plans[..<index] {
            let forced = TCPTracer.Options(attachMode: better.hooks.configValue, readPath: better.readPath.configValue)
            #expect(throws: TracerError.self, "\(better.name) loads here, yet auto took \(tracer.plan.name)") {
                try TCPTracer.start(forced)
            }
        }
        #expect(tracer.attachReason.hasPrefix("\(tracer.plan.name) (auto"))
        // Only the chosen plan's programs are loaded.
        #expect(Set(tracer.programStats().map(\.name)) == Set(tracer.plan.programs.map(\.rawValue)))
    }

    /// Each hook kind and read path forced, as `bpf.attach_mode` and
    /// `bpf.read_path` do: a combination this kernel allows counts exactly
    /// (IPv4 and IPv6, MSG_PEEK, live and closed); one it refuses fails in one
    /// line that says what the kernel refused.
    @Test(arguments: KernelPlans.combinations)
    func everyPlanThisKernelAllowsCountsExactly(_ combination: KernelPlans.Combination) throws {
        let tracer: TCPTracer
        do {
            tracer = try TCPTracer.start(combination.options())
        } catch {
            let text = "\(error)"
            print("\(combination): refused here: \(text)")
            #expect(!KernelPlans.allowed.contains(combination))
            #expect(text.hasPrefix("no way to count TCP bytes on kernel "), "\(text)")
            #expect(text.contains("refused") || text.contains("could not attach") || text.contains("has no")
                    || text.contains("cannot use"), "\(text)")
            #expect(!text.contains("\n"))
            return
        }
        #expect(KernelPlans.allowed.contains(combination))
        #expect(Set(tracer.programStats().map(\.name)) == Set(tracer.plan.programs.map(\.rawValue)))
        for (family, name) in [("4", "tt-pl4"), ("6", "tt-pl6")] {
            let exchange = try TrafficPeers.exchange(
                family: family, clientName: "\(name)-c", serverName: "\(name)-s", clientSends: 123_457, serverSends: 1001,
                peek: true)
            let reading = try tracer.read()
            let client = reading.connections.filter { $0.id.pid == exchange.clientPID }
            let server = reading.connections.filter { $0.id.pid == exchange.serverPID }
            try #require(client.count == 1 && server.count == 1, "\(combination) IPv\(family)")
            #expect(client[0].labels.commText == "\(name)-c" && server[0].labels.commText == "\(name)-s")
            #expect(client[0].sentBytes == 123_457 && client[0].receivedBytes == 1001, "\(combination)")
            #expect(server[0].sentBytes == 1001 && server[0].receivedBytes == 123_457, "\(combination)")
            #expect(client[0].closed && server[0].closed)
            #expect(reading.missedCalls == 0)
        }
    }

    @Test func thisKernelAllowsAtLeastOnePlan() {
        #expect(!KernelPlans.allowed.isEmpty, "no plan loads on this kernel")
        print("plans this kernel allows: \(KernelPlans.allowed.map(\.description).joined(separator: ", "))")
    }
}

/// The (hooks, read path) combinations, and those the running kernel
/// allows, found once by starting each: the real-BPF tests run on each
/// allowed one, so a path is tested on every machine that can run it.
enum KernelPlans {
    struct Combination: Sendable, Hashable, CustomStringConvertible, CustomTestStringConvertible {
        var hooks: AttachPlan.Hooks
        var readPath: AttachPlan.ReadPath
        var description: String { "\(hooks.rawValue)+\(readPath.rawValue)" }
        var testDescription: String { description }

        func options(mapCapacity: UInt32 = 65536, targetPID: UInt32 = 0) -> TCPTracer.Options {
            TCPTracer.Options(mapCapacity: mapCapacity, targetPID: targetPID,
                              attachMode: hooks.configValue, readPath: readPath.configValue)
        }
    }

    static let combinations: [Combination] = AttachPlan.Hooks.allCases.flatMap { hooks in
        AttachPlan.ReadPath.allCases.map { Combination(hooks: hooks, readPath: $0) }
    }

    /// Empty without root (the suites that use it are disabled then).
    static let allowed: [Combination] = runningAsRoot
        ? combinations.filter { (try? TCPTracer.start($0.options())) != nil } : []
}
