import CTCPTop
import Glibc

/// Why the tracer could not start or read; each description is one line
/// meant for the user.
public struct TracerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }

    /// libbpf returns -errno, or its own codes above 4000 that only
    /// libbpf_strerror knows.
    static func libbpf(_ what: String, code: Int32) -> TracerError {
        TracerError("\(what): \(libbpfErrorText(code))")
    }
}

func libbpfErrorText(_ code: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    let positive = code < 0 ? -code : code
    if libbpf_strerror(positive, &buffer, buffer.count) == 0 {
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return String(cString: strerror(positive))
}
