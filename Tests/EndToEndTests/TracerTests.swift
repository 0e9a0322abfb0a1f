import Foundation
import TCPTopBPF
import TCPTopCore
import Testing

/// Real BPF: load the tracer, move known bytes between named processes over
/// loopback, and compare the kernel's counts with what was really moved.
@Suite(.serialized, .enabled(if: runningAsRoot, "needs root for BPF"))
struct TracerTests {
    @Test(arguments: ["4", "6"])
    func countsExactBytesPerConnectionEnd(family: String) throws {
        let tracer = try TCPTracer.start(.init())
        var checked = 0
        for (index, (clientBytes, serverBytes)) in [(1, 123_457), (1_000_000, 1), (65_536, 3_000_001)].enumerated() {
            let exchange = try TrafficPeers.exchange(
                family: family, clientName: "tt-cli-\(index)", serverName: "tt-srv-\(index)",
                clientSends: UInt64(clientBytes), serverSends: UInt64(serverBytes), seed: index)
            let reading = try tracer.read()
            checked += try assertExchange(exchange, in: reading.connections)
        }
        #expect(checked == 6)
    }

    @Test func peekedBytesAreNotCountedTwice() throws {
        let tracer = try TCPTracer.start(.init())
        let exchange = try TrafficPeers.exchange(
            family: "4", clientName: "tt-peek-c", serverName: "tt-peek-s", clientSends: 5000, serverSends: 7, peek: true)
        #expect(try assertExchange(exchange, in: tracer.read().connections) == 2)
    }

    @Test func closedConnectionsLeaveTheKernelMapAfterOneRead() throws {
        let tracer = try TCPTracer.start(.init())
        let exchange = try TrafficPeers.exchange(
            family: "4", clientName: "tt-close-c", serverName: "tt-close-s", clientSends: 10, serverSends: 20)
        // The peers exited, so both sockets were destroyed: the first read
        // reports them closed, with their final counts, and removes them.
        let first = try tracer.read().connections.filter { $0.id.pid == exchange.clientPID || $0.id.pid == exchange.serverPID }
        #expect(first.count == 2)
        #expect(first.allSatisfy { $0.closed })
        let second = try tracer.read().connections.filter { $0.id.pid == exchange.clientPID || $0.id.pid == exchange.serverPID }
        #expect(second.isEmpty)
    }

    @Test func aFullMapStillCountsEveryByteAsUnattributed() throws {
        let tracer = try TCPTracer.start(.init(mapCapacity: 1))
        let before = try tracer.read()
        // Several connections with a one-entry map: what is not in the map
        // must show up in the unattributed counters.
        var moved: UInt64 = 0
        for index in 0..<3 {
            let exchange = try TrafficPeers.exchange(
                family: "4", clientName: "tt-full-c", serverName: "tt-full-s", clientSends: 1000, serverSends: 10, seed: index)
            moved += exchange.clientSent + exchange.serverSent
        }
        let after = try tracer.read()
        let ours = after.connections.filter { $0.labels.commText.hasPrefix("tt-full") }
        let attributed = ours.reduce(UInt64(0)) { $0 + $1.sentBytes }
        let unattributedSent = after.unattributed.sentBytes - before.unattributed.sentBytes
        // Other traffic may also land in the unattributed counter, never less.
        #expect(attributed + unattributedSent >= moved)
        #expect(after.unattributed.sendEvents > before.unattributed.sendEvents)
        #expect(ours.count <= 1)
    }

    @Test func onlyTheTargetProcessIsCountedWithAPIDFilter() throws {
        let tracer = try TCPTracer.start(.init(targetPID: UInt32(getpid())))
        _ = try TrafficPeers.exchange(family: "4", clientName: "tt-pid-c", serverName: "tt-pid-s", clientSends: 10, serverSends: 10)
        #expect(try tracer.read().connections.filter { $0.labels.commText.hasPrefix("tt-pid") }.isEmpty)
    }

    /// Checks the client's and the server's connection ends; returns how many were checked.
    private func assertExchange(_ exchange: TrafficPeers.Exchange, in samples: [ConnectionSample]) throws -> Int {
        let family: AddressFamily = exchange.family == "4" ? .ipv4 : .ipv6
        let client = samples.filter { $0.id.pid == exchange.clientPID }
        let server = samples.filter { $0.id.pid == exchange.serverPID }
        try #require(client.count == 1 && server.count == 1, "one connection end per peer: \(client) \(server)")
        let expectedClient = ConnectionLabels(
            pid: exchange.clientPID, comm: Array(exchange.clientName.utf8), family: family,
            localAddress: exchange.loopback, localPort: exchange.clientPort,
            remoteAddress: exchange.loopback, remotePort: exchange.serverPort)
        let expectedServer = ConnectionLabels(
            pid: exchange.serverPID, comm: Array(exchange.serverName.utf8), family: family,
            localAddress: exchange.loopback, localPort: exchange.serverPort,
            remoteAddress: exchange.loopback, remotePort: exchange.clientPort)
        #expect(client[0].labels == expectedClient)
        #expect(server[0].labels == expectedServer)
        #expect(client[0].sentBytes == exchange.clientSent && client[0].receivedBytes == exchange.serverSent)
        #expect(server[0].sentBytes == exchange.serverSent && server[0].receivedBytes == exchange.clientSent)
        return 2
    }
}
