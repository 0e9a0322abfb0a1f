import Glibc

/// Starts `body` on a detached POSIX thread; false if the system refuses
/// (thread limit), so the caller can shed the work instead of crashing.
func startHTTPThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    // Ownership of the box passes to the new thread, which releases it.
    let argument = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(&thread, nil, { argument in
        Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
        return nil
    }, argument)
    guard status == 0 else {
        Unmanaged<Box>.fromOpaque(argument).release()
        return false
    }
    pthread_detach(thread)
    return true
}
