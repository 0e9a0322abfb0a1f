import CTCPTop

/// Inflates a gzip body for the client, never past `maxBytes` (a small
/// body can inflate to gigabytes).
enum HTTPGunzip {
    static func inflate(_ data: [UInt8], maxBytes: Int) throws(HTTPClientError) -> [UInt8] {
        var stream = z_stream()
        // inflateInit2 is a macro; 15 + 16 window bits: a gzip header, not zlib's.
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw HTTPClientError(.badReply, "cannot start gzip decoding")
        }
        defer { inflateEnd(&stream) }
        var input = data  // zlib's next_in is not const-qualified here.
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        var status = Z_OK
        var tooLarge = false
        input.withUnsafeMutableBufferPointer { inputBuffer in
            var offset = 0
            // avail_in is 32 bits: feed at most 1 GiB at a time.
            while status == Z_OK && !tooLarge {
                if stream.avail_in == 0 && offset < inputBuffer.count {
                    let count = min(inputBuffer.count - offset, 1 << 30)
                    stream.next_in = inputBuffer.baseAddress! + offset
                    stream.avail_in = uInt(count)
                    offset += count
                }
                chunk.withUnsafeMutableBufferPointer { chunkBuffer in
                    stream.next_out = chunkBuffer.baseAddress
                    stream.avail_out = uInt(chunkBuffer.count)
                    status = CTCPTop.inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk.count - Int(stream.avail_out)
                if output.count + produced > maxBytes { tooLarge = true }
                output += chunk[..<produced]
                // No progress with fresh output space: the input ran out, the stream is cut short.
                if status == Z_BUF_ERROR { status = Z_DATA_ERROR }
            }
            if status == Z_STREAM_END && (stream.avail_in > 0 || offset < inputBuffer.count) { status = Z_DATA_ERROR }
        }
        if tooLarge {
            throw HTTPClientError(.tooLarge, "reply body inflates to more than the limit of \(byteCountText(maxBytes))")
        }
        guard status == Z_STREAM_END else {
            throw HTTPClientError(.badReply, "reply body is not valid gzip (zlib status \(status))")
        }
        return output
    }
}

/// `512 MiB`, `64 KiB`, or `1000 bytes`.
func byteCountText(_ count: Int) -> String {
    if count > 0 && count % (1 << 20) == 0 { return "\(count >> 20) MiB" }
    if count > 0 && count % (1 << 10) == 0 { return "\(count >> 10) KiB" }
    return "\(count) bytes"
}
