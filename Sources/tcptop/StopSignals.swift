import Glibc

/// SIGINT and SIGTERM end tcptop at once and cleanly. They are blocked in
/// every thread and taken synchronously: the interval sleep is a
/// `sigtimedwait`, and slow I/O polls `sigpending`, so the caller can drop
/// the tracer (detaching the BPF programs) before exiting.
enum StopSignals {
    struct Stopped: Error {}

    private static var set: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        return set
    }

    static func block() {
        var stopSet = set
        pthread_sigmask(SIG_BLOCK, &stopSet, nil)
    }

    /// Monotonic seconds.
    static func now() -> Double {
        var clock = timespec()
        clock_gettime(CLOCK_MONOTONIC, &clock)
        return Double(clock.tv_sec) + Double(clock.tv_nsec) * 1e-9
    }

    /// Sleeps until `deadline` (monotonic seconds); true if a stop signal came first.
    static func wait(until deadline: Double) -> Bool {
        var stopSet = set
        while true {
            let left = deadline - now()
            if left <= 0 { return isPending() }
            // At most a day per wait: Int(left) would trap on an interval past Int.max seconds.
            let step = min(left, 86_400)
            var timeout = timespec(tv_sec: Int(step), tv_nsec: Int((step - Double(Int(step))) * 1e9))
            let result = sigtimedwait(&stopSet, nil, &timeout)
            if result == SIGINT || result == SIGTERM { return true }
            // EAGAIN: timed out (loop checks the clock); EINTR: another signal.
        }
    }

    /// A stop signal is waiting to be taken.
    static func isPending() -> Bool {
        var pending = sigset_t()
        sigpending(&pending)
        return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1
    }
}
