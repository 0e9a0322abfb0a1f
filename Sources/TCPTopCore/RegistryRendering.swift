extension ConnectionRegistry {
    public static let sentHelp =
        "Bytes sent over TCP, summed over the connection ends that share these labels."
    public static let receivedHelp =
        "Bytes received over TCP, summed over the connection ends that share these labels."
    public static let retransmitsHelp =
        "TCP segments the kernel retransmitted, counted at tcp:tcp_retransmit_skb on the socket's owner's end, "
        + "summed over the connection ends that share these labels."
    public static let rttHelp =
        "The kernel's smoothed round-trip time (srtt) of the socket, in seconds: the highest among the open "
        + "connection ends that share these labels that have one (no sample while none has)."

    /// What a render needs, as of now: every series' sums, and the label
    /// texts by reference. Taken under the caller's lock; rendered after it
    /// is released. Later updates do not change it: the arrays it shares are
    /// copied by the registry on its next write to them (once per snapshot:
    /// at most the per-slot state and text positions and one 64 KiB chunk of
    /// label text per view; a text compaction copies the live texts).
    public func snapshot() -> RegistrySnapshot {
        RegistrySnapshot(views: views.map { $0.snapshot(entries: entries, reasons: failureReasons, liveFacts: openEndsWithFacts) })
    }

    /// Writes the families of every view (the whole text in one buffer;
    /// the daemon streams a snapshot instead).
    public func render(into writer: inout ExpositionWriter) {
        snapshot().write { writer.bytes.append(contentsOf: $0) }
    }
}

/// The series of every view at one moment, rendered piece by piece.
public struct RegistrySnapshot: Sendable {
    let views: [ViewSnapshot]

    /// Writes the families of every view, then `trailer`, to `sink` in
    /// pieces of about `pieceSize` bytes (a piece ends after a whole line).
    public func write(pieceSize: Int = 1 << 16, trailer: [UInt8] = [],
                      to sink: (ArraySlice<UInt8>) throws -> Void) rethrows {
        let longestLine = views.map(\.longestLine).max() ?? 0
        let capacity = max(pieceSize, 1) + max(longestLine, trailer.count)
        var cursor = RenderCursor()
        var trailerWritten = false
        while !trailerWritten {
            let piece = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
                var out = OutputBuffer(base: buffer.baseAddress!, capacity: capacity)
                while cursor.view < views.count && out.count < pieceSize {
                    if views[cursor.view].fill(&out, until: pieceSize, cursor: &cursor) { cursor.nextView() }
                }
                if cursor.view == views.count && out.count + trailer.count <= capacity {
                    out.append(trailer)
                    trailerWritten = true
                }
                count = out.count
            }
            if !piece.isEmpty { try sink(piece[...]) }
        }
    }
}

/// Where a render is: view, family (sent, received, then the health ones rendered) and slot.
struct RenderCursor {
    var view = 0
    var family = 0
    /// -1: the family's header is next; `state.count`: the overflow series is next.
    var slot = -1

    mutating func nextView() {
        view += 1
        family = 0
        slot = -1
    }
}

/// Raw bytes into a piece being built; the caller checks the room.
struct OutputBuffer {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    var count = 0

    /// Most of what a sample is made of is 1 to 32 bytes: copied with two
    /// overlapping loads and stores instead of a call to memcpy (16 per sample).
    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress else { return }
        let length = bytes.count
        let target = UnsafeMutableRawPointer(base + count)
        if length >= 16 {
            if length <= 32 {
                let head = source.loadUnaligned(as: SIMD16<UInt8>.self)
                let tail = source.loadUnaligned(fromByteOffset: length - 16, as: SIMD16<UInt8>.self)
                target.storeBytes(of: head, as: SIMD16<UInt8>.self)
                target.storeBytes(of: tail, toByteOffset: length - 16, as: SIMD16<UInt8>.self)
            } else {
                target.copyMemory(from: source, byteCount: length)
            }
        } else if length >= 8 {
            let head = source.loadUnaligned(as: UInt64.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 8, as: UInt64.self)
            target.storeBytes(of: head, as: UInt64.self)
            target.storeBytes(of: tail, toByteOffset: length - 8, as: UInt64.self)
        } else if length >= 4 {
            let head = source.loadUnaligned(as: UInt32.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self)
            target.storeBytes(of: head, as: UInt32.self)
            target.storeBytes(of: tail, toByteOffset: length - 4, as: UInt32.self)
        } else {
            for offset in 0..<length { target.storeBytes(of: source.load(fromByteOffset: offset, as: UInt8.self), toByteOffset: offset, as: UInt8.self) }
        }
        count += length
    }

    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    @inline(__always)
    mutating func append(byte: UInt8) {
        base[count] = byte
        count += 1
    }

    /// Digits written in place, backwards from their end.
    @inline(__always)
    mutating func appendDecimal(_ value: UInt64) {
        var digits = 1
        var scale: UInt64 = 10
        while digits < 20 && value >= scale {
            digits += 1
            scale = scale &* 10
        }
        var rest = value
        var position = count + digits
        while position > count {
            position -= 1
            let (quotient, remainder) = rest.quotientAndRemainder(dividingBy: 10)
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remainder)
            rest = quotient
        }
        count += digits
    }

    /// Microseconds as seconds with up to six decimals, no exponent, trailing zeros dropped (80812 → 0.080812).
    @inline(__always)
    mutating func appendMicroseconds(_ value: UInt64) {
        let (seconds, fraction) = value.quotientAndRemainder(dividingBy: 1_000_000)
        appendDecimal(seconds)
        guard fraction != 0 else { return }
        var digits = 6
        var rest = fraction
        while rest % 10 == 0 {
            rest /= 10
            digits -= 1
        }
        base[count] = UInt8(ascii: ".")
        var position = count + digits
        count += digits + 1
        while position > count - digits - 1 {
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
            position -= 1
        }
    }
}
