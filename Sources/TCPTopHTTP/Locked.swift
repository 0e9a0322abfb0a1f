import Glibc

/// A value behind a pthread mutex: what the daemon's threads share, and the
/// only way to reach it. Synchronization's `Mutex` would say the same, but on
/// Linux it is built on raw futexes that ThreadSanitizer cannot see: every
/// access under it is reported as a race, which would blind the race test
/// (Tests/tools/race-test.sh). A pthread mutex is what TSan understands.
public final class Locked<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock; never call back into the same lock.
    public func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
