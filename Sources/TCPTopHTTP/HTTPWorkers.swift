import Dispatch

/// A complete request, handed from the event loop to a worker.
struct HTTPJob: Sendable {
    var fd: Int32
    var stamp: UInt64
    var request: HTTPRequest
    var transport: HTTPTransport
}

/// A connection handed back to the loop after its response.
struct HTTPFinished: Sendable {
    var fd: Int32
    var stamp: UInt64
    var outcome: HTTPResponder.Outcome
}

/// Jobs for the worker threads. The loop never hands out more jobs than
/// there are workers, so a job never waits for one.
final class HTTPJobQueue: Sendable {
    private struct State {
        var jobs: [HTTPJob] = []
        var closed = false
    }
    private let state = Locked(State())
    private let available = DispatchSemaphore(value: 0)

    func submit(_ job: HTTPJob) {
        state.withLock { $0.jobs.append(job) }
        available.signal()
    }

    /// The next job; nil once closed and empty (the worker then ends).
    func next() -> HTTPJob? {
        while true {
            available.wait()
            let (job, closed) = state.withLock { state in
                (state.jobs.isEmpty ? nil : state.jobs.removeFirst(), state.closed)
            }
            if let job { return job }
            if closed { return nil }
        }
    }

    /// Ends the `workers` threads once the jobs left are done.
    func close(workers: Int) {
        state.withLock { $0.closed = true }
        for _ in 0..<workers { available.signal() }
    }
}
