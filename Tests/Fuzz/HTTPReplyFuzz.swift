// libFuzzer target: the client reading replies from any bytes. A socketpair
// holds them with its writing end closed, so reading never waits. Besides
// not crashing: a failure is one non-empty line and never a timeout, a
// body stays within the cap (HEAD: none), and a reply that ends the
// connection leaves it marked not reusable. The first byte is not sent:
// it picks gzip decoding and HEAD. Built by Tests/Fuzz/run.sh with the
// client's files.
import Glibc

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPReply(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var ends: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
    var offset = 1
    while offset < size {  // max_len is far below the socket buffer
        let written = write(ends[1], data + offset, size - offset)
        precondition(written > 0, "write to the socketpair: \(errno)")
        offset += written
    }
    close(ends[1])

    let flags = size > 0 ? data[0] : 0
    var options = HTTPClient.Options()
    options.timeout = .seconds(2)
    options.maxBodyBytes = 4096
    options.maxHeadBytes = 1024
    options.acceptGzip = flags & 1 == 1
    let method = flags & 2 == 2 ? "HEAD" : "GET"
    let connection = HTTPClientConnection(fd: ends[0], host: "fuzz", port: 1, options: options)
    for _ in 0..<16 {  // pipelined replies, a bounded number
        do {
            let reply = try connection.readReply(to: method)
            precondition((100...999).contains(reply.status), "status \(reply.status)")
            precondition(reply.body.count <= options.maxBodyBytes, "a body of \(reply.body.count) bytes")
            precondition(method == "GET" || reply.body.isEmpty, "a body for HEAD")
            if !reply.keepsConnectionOpen {
                precondition(!connection.isReusable, "a closing reply left the connection reusable")
                break
            }
        } catch {
            let text = error.description
            precondition(!text.isEmpty && !text.contains("\n") && !text.contains("\r"), "error \(text.debugDescription)")
            precondition(error.kind != .timedOut && error.kind != .interrupted, "\(error.kind) with every byte there")
            break
        }
    }
    return 0
}
