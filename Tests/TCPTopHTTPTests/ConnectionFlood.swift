import Foundation
import Glibc
import TestChildProcess

/// Tests/idle_flood.py as a child: many idle loopback connections, some
/// trickling a byte a second, held until this is released (deinit), with
/// the child's own descriptor limit.
final class ConnectionFlood {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appending(path: "idle_flood.py").path
    private let process = ChildProcess()
    private let input = Pipe()

    /// Returns once all `count` connections are open (at most `timeout` seconds).
    init(port: UInt16, count: Int, trickling: Int = 0, timeout: Double = 60) throws {
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [Self.script, "--port", "\(port)", "--count", "\(count)", "--trickle", "\(trickling)"]
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let ready = DispatchSemaphore(value: 0)
        let line = LockedLine()
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty || line.append(data) { handle.readabilityHandler = nil; ready.signal() }
        }
        guard ready.wait(timeout: .now() + timeout) == .success, line.text.hasPrefix("READY \(count)") else {
            process.signal(SIGKILL)  // not SIGTERM: the child may have this thread's mask, which can block it
            throw TestClient.Failure.timedOut
        }
    }

    deinit {
        try? input.fileHandleForWriting.close()  // the child exits when its stdin closes
        if !process.waitUntilExit(timeout: 5) { process.signal(SIGKILL) }
    }

    private final class LockedLine: @unchecked Sendable {
        private let lock = NSLock()
        private var bytes = Data()
        var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }
        /// True once a whole line is in.
        func append(_ data: Data) -> Bool { lock.withLock { bytes.append(data); return bytes.contains(10) } }
    }
}

/// Seconds since `start`.
func secondsSince(_ start: ContinuousClock.Instant) -> Double {
    let elapsed = start.duration(to: .now).components
    return Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
}
