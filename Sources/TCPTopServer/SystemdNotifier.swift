import CTCPTop
import Foundation

/// Tells systemd what the daemon is doing, through sd_notify (a no-op when
/// NOTIFY_SOCKET is unset, i.e. when not started by systemd).
public struct SystemdNotifier: Sendable {
    public init() {}

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    public func status(_ text: String) { send("STATUS=\(text)") }
    public func reloading() {
        // systemd >= 253 wants the monotonic time with RELOADING=1; older ones ignore it.
        send("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds())")
    }
    public func stopping() { send("STOPPING=1\nSTATUS=Stopping") }
    public func watchdogPing() { send("WATCHDOG=1") }

    /// The watchdog interval systemd asked for (WatchdogSec=), if any.
    public func watchdogInterval() -> Double? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return Double(microseconds) / 1_000_000
    }

    private func send(_ message: String) {
        // Newlines in a STATUS text would start a new assignment: keep one line.
        _ = sd_notify(0, message)
    }

    private func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
