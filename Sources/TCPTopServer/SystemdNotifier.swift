import CTCPTop
import Foundation
import Glibc

/// Tells systemd what the daemon is doing, without ever making the caller
/// wait for systemd. Every call only records what is to be said and returns;
/// one thread of the notifier's own sends it on a non-blocking datagram
/// socket connected to $NOTIFY_SOCKET (a path or an abstract "@name"). When
/// the reader is slow (the kernel queues only a few datagrams for an unread
/// unix socket) that thread waits for room, not the caller:
///
/// - state changes (READY=1, RELOADING=1, STOPPING=1) are kept, in order,
///   and sent when there is room; never dropped;
/// - STATUS= is coalesced: only the latest text is sent, only when it differs
///   from the last one sent, and a STATUS-only message at most once every
///   `statusInterval` seconds (a state change carries its STATUS at once);
/// - WATCHDOG=1 is a flag: a ping asked while one is waiting adds nothing.
///
/// With NOTIFY_SOCKET unset (not started by systemd) every call does nothing.
/// The thread starts at `start()` (or the first message after it), so a
/// caller can start it after it dropped capabilities.
public final class SystemdNotifier: @unchecked Sendable {
    /// The target, from NOTIFY_SOCKET; nil when unset or not a unix socket.
    private let address: sockaddr_un?
    private let addressLength: socklen_t
    public let statusInterval: Double

    private let condition = NSCondition()
    // Guarded by `condition`:
    private var states: [String] = []  // each a whole message, e.g. "READY=1\nSTATUS=…"
    private var pendingStatus: String?  // latest STATUS text asked for
    private var sentStatus: String?  // last STATUS text the reader was given
    private var lastStatusSent = -Double.infinity
    private var watchdogPending = false
    private var sending = false  // a message is out of the queue, on its way
    private var started = false
    private var startAllowed = false
    private var counters = Counters()

    /// What the notifier did, for tests and the log.
    public struct Counters: Sendable, Equatable {
        public var sent = 0
        public var waitsForRoom = 0  // sends that found the reader's queue full
        public var sendErrors = 0
        public var coalescedReloads = 0  // RELOADING=1 + READY=1 pairs folded while queued
    }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment, statusInterval: Double = 10) {
        self.statusInterval = statusInterval
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        if let target = environment["NOTIFY_SOCKET"], let first = target.utf8.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "@"),
           target.utf8.count < capacity {
            var bytes = Array(target.utf8)
            if first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace: a leading NUL, no terminator
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            self.address = address
            addressLength = socklen_t(pathOffset + bytes.count + (first == UInt8(ascii: "@") ? 0 : 1))
        } else {
            self.address = nil
            addressLength = 0
        }
    }

    /// True when there is a NOTIFY_SOCKET to tell.
    public var isEnabled: Bool { address != nil }

    /// Lets the sending thread start (it starts now if anything is waiting).
    public func start() {
        condition.withLock {
            startAllowed = true
            startThreadIfNeeded()
        }
    }

    public func ready(status: String) {
        enqueueState("READY=1\nSTATUS=\(oneLine(status))", status: oneLine(status))
    }

    public func status(_ text: String) {
        guard isEnabled else { return }
        condition.withLock {
            pendingStatus = oneLine(text)
            wakeLocked()
        }
    }

    public func reloading() {
        // systemd >= 253 wants the monotonic time with RELOADING=1; older ones ignore it.
        enqueueState("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds())", status: nil)
    }

    public func stopping() { enqueueState("STOPPING=1\nSTATUS=Stopping", status: "Stopping") }

    /// Asks for one WATCHDOG=1. Call it only when the daemon is healthy.
    public func watchdogPing() {
        guard isEnabled else { return }
        condition.withLock {
            watchdogPending = true
            wakeLocked()
        }
    }

    /// Waits at most `timeout` seconds for every state change asked for so
    /// far to be sent (e.g. STOPPING=1 before exit). True when all were.
    @discardableResult
    public func flush(timeout: Double) -> Bool {
        guard isEnabled else { return true }
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !states.isEmpty || sending {
            guard started, condition.wait(until: deadline) else { break }
        }
        return states.isEmpty && !sending
    }

    public var statistics: Counters { condition.withLock { counters } }

    /// The watchdog interval systemd asked for (WatchdogSec=), if any.
    public func watchdogInterval() -> Double? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return Double(microseconds) / 1_000_000
    }

    // MARK: The sending thread

    private func enqueueState(_ message: String, status: String?) {
        guard isEnabled else { return }
        condition.withLock {
            states.append(message)
            if let status { pendingStatus = status }
            // Bounded while nobody reads (a SIGHUP storm): a reload that began
            // and ended while queued tells systemd nothing the next one does
            // not, so such a pair goes (never the head: it may be on its way).
            var index = 1
            while states.count > Self.maximumQueuedStates && index + 1 < states.count - 1 {
                if states[index].hasPrefix("RELOADING=1"), states[index + 1].hasPrefix("READY=1") {
                    states.removeSubrange(index...index + 1)
                    counters.coalescedReloads += 1
                } else {
                    index += 1
                }
            }
            wakeLocked()
        }
    }

    static let maximumQueuedStates = 16

    private func wakeLocked() {
        startThreadIfNeeded()
        condition.broadcast()
    }

    private func startThreadIfNeeded() {
        guard startAllowed, !started, address != nil else { return }
        started = true
        let thread = Thread { [self] in sendLoop() }
        thread.name = "sd_notify"
        thread.start()
    }

    private enum Next {
        case state(String)
        case watchdog
        case status(String)
    }

    /// The next message to send, or when to look again (nil: on a wake-up).
    /// Called with the lock held.
    private func nextLocked(now: Double) -> (Next?, Double?) {
        if let state = states.first { return (.state(state), nil) }
        if watchdogPending { return (.watchdog, nil) }
        if let status = pendingStatus, status != sentStatus {
            let due = lastStatusSent + statusInterval
            return now >= due ? (.status(status), nil) : (nil, due)
        }
        return (nil, nil)
    }

    private func sendLoop() {
        var fd: Int32 = -1
        while true {
            condition.lock()
            var next: Next?
            while true {
                let (found, due) = nextLocked(now: monotonicSeconds())
                if let found {
                    next = found
                    break
                }
                if let due {
                    _ = condition.wait(until: Date().addingTimeInterval(max(0.001, due - monotonicSeconds())))
                } else {
                    condition.wait()
                }
            }
            sending = true
            condition.unlock()

            let message: String
            switch next! {
            case .state(let text): message = text
            case .watchdog: message = "WATCHDOG=1"
            case .status(let text): message = "STATUS=\(text)"
            }
            if fd < 0 { fd = connectSocket() }
            let outcome = fd < 0 ? ECONNREFUSED : sendOnce(fd: fd, message)

            condition.lock()
            sending = false
            switch outcome {
            case 0:
                counters.sent += 1
                switch next! {
                case .state(let text):
                    states.removeFirst()
                    if let range = text.range(of: "STATUS=") { noteStatusSentLocked(String(text[range.upperBound...])) }
                case .watchdog: watchdogPending = false
                case .status(let text): noteStatusSentLocked(text)
                }
            case EAGAIN:
                counters.waitsForRoom += 1
            case EMSGSIZE:
                // Can never be sent: dropped, not retried forever ahead of the rest.
                counters.sendErrors += 1
                switch next! {
                case .state: states.removeFirst()
                case .watchdog: watchdogPending = false
                case .status(let text): noteStatusSentLocked(text)
                }
            default:
                counters.sendErrors += 1
            }
            condition.broadcast()  // flush() waits on it
            condition.unlock()

            switch outcome {
            case 0, EMSGSIZE: break
            case EAGAIN:
                // The reader's queue is full: wait until it has room (poll
                // on a connected datagram socket says so), a bounded while,
                // then look again for what is newest.
                var pollFD = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&pollFD, 1, 500)
            default:
                // No reader (not yet, or gone: systemd re-executed): connect again later.
                if fd >= 0 { close(fd) }
                fd = -1
                usleep(200_000)
            }
        }
    }

    private func noteStatusSentLocked(_ text: String) {
        sentStatus = text
        lastStatusSent = monotonicSeconds()
        if pendingStatus == text { pendingStatus = nil }
    }

    private func connectSocket() -> Int32 {
        guard var address else { return -1 }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, addressLength) }
        }
        guard connected == 0 else {
            close(fd)
            return -1
        }
        return fd
    }

    /// 0 when sent, else the errno.
    private func sendOnce(fd: Int32, _ message: String) -> Int32 {
        let bytes = Array(message.utf8)
        while true {
            let count = send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            if count == bytes.count { return 0 }
            if count < 0 && errno == EINTR { continue }
            return count < 0 ? errno : EMSGSIZE
        }
    }

    /// Newlines in a STATUS text would start a new assignment: keep one line.
    private func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: " ")
    }

    private func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
