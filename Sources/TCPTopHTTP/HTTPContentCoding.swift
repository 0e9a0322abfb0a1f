import CTCPTop

/// Content negotiation and gzip compression of response bodies.
public enum HTTPContentCoding {
    /// Whether `Accept-Encoding` values allow gzip (RFC 9110 §12.5.3):
    /// `gzip` (or its alias `x-gzip`) with a q-value above 0, or else `*`
    /// with a q-value above 0. An explicit `gzip;q=0` wins over `*`.
    /// No header at all means identity: scrapers that want gzip say so.
    public static func acceptsGzip(_ headerValues: [String]) -> Bool {
        var gzipQuality: Double?
        var wildcardQuality: Double?
        for element in headerValues.flatMap({ $0.split(separator: ",") }) {
            let parts = element.split(separator: ";")
            guard let coding = parts.first?.trimmingWhitespace().lowercased() else { continue }
            let quality = parts.dropFirst().lazy.compactMap(qualityValue).first ?? 1
            switch coding {
            case "gzip", "x-gzip": gzipQuality = max(gzipQuality ?? 0, quality)
            case "*": wildcardQuality = quality
            default: break
            }
        }
        return (gzipQuality ?? wildcardQuality ?? 0) > 0
    }

    /// `q=0.5` → 0.5; other parameters → nil; a malformed q-value counts as 0
    /// (refusing is the safe reading of something we cannot understand).
    private static func qualityValue(_ parameter: Substring) -> Double? {
        let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
        guard pair.count == 2, pair[0].lowercased() == "q" else { return nil }
        guard let value = Double(pair[1]), (0...1).contains(value) else { return 0 }
        return value
    }

    /// Compresses `bytes` into one gzip member. Nil only if zlib fails
    /// (out of memory); the caller then sends the body uncompressed.
    public static func gzip(_ bytes: [UInt8], level: Int32 = 1) -> [UInt8]? {
        guard bytes.count < Int(UInt32.max / 2) else { return nil }
        var stream = z_stream()
        guard tcptop_deflate_init_gzip(&stream, level) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))))
        var input = bytes  // zlib's next_in is not const-qualified here.
        let status = input.withUnsafeMutableBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                stream.next_in = inputBuffer.baseAddress
                stream.avail_in = uInt(inputBuffer.count)
                stream.next_out = outputBuffer.baseAddress
                stream.avail_out = uInt(outputBuffer.count)
                // deflateBound makes one Z_FINISH call sufficient.
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        output.removeLast(Int(stream.avail_out))
        return output
    }
}

/// gzip as a stream: pieces in, compressed pieces out, so a body is never
/// held whole (neither its text nor its compressed form).
final class HTTPGzipStream {
    struct Failure: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "gzip: zlib status \(status)" }
    }

    // Heap-allocated: zlib keeps a pointer back to the stream and checks it on every call.
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    private var output = [UInt8](repeating: 0, count: 32 * 1024)

    init?(level: Int32) {
        stream.initialize(to: z_stream())
        guard tcptop_deflate_init_gzip(stream, level) == Z_OK else {
            stream.deallocate()
            return nil
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// Compresses `input` (with `finish`, also what zlib still holds, and
    /// the trailer) and hands each piece of output to `emit` as it is made.
    func compress(_ input: ArraySlice<UInt8>, finish: Bool, emit: (ArraySlice<UInt8>) throws -> Void) throws {
        var rest = input
        repeat {
            // avail_in is 32 bits: feed at most 1 MiB a call.
            let part = rest.prefix(1 << 20)
            rest = rest.dropFirst(part.count)
            let flush = finish && rest.isEmpty ? Z_FINISH : Z_NO_FLUSH
            try part.withUnsafeBufferPointer { inputBuffer in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: inputBuffer.baseAddress)
                stream.pointee.avail_in = uInt(inputBuffer.count)
                while true {
                    let status = output.withUnsafeMutableBufferPointer { outputBuffer in
                        stream.pointee.next_out = outputBuffer.baseAddress
                        stream.pointee.avail_out = uInt(outputBuffer.count)
                        return deflate(stream, flush)
                    }
                    guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else { throw Failure(status: status) }
                    let made = output.count - Int(stream.pointee.avail_out)
                    if made > 0 { try emit(output[..<made]) }
                    // Done when zlib took all the input and had room to spare (or wrote the trailer).
                    if flush == Z_FINISH ? status == Z_STREAM_END : stream.pointee.avail_out > 0 { break }
                }
            }
        } while !rest.isEmpty
    }
}
