// libFuzzer target: the HTTP request head parser on any bytes. Besides not
// crashing, a parse must agree with itself: a complete head re-parses the
// same from its own bytes and from a slice that does not start at index 0,
// and every refusal maps to a status the server sends. Built by
// Tests/Fuzz/run.sh together with HTTPRequestParser.swift and HTTPMessage.swift.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // The first byte, when there is one, also picks a small head limit, to reach the 414/431 paths.
    let limits = [HTTPRequestParser.defaultMaxHeadSize, 1 + Int(bytes.first ?? 0)]
    for limit in limits {
        let whole = outcome(bytes[...], limit)
        // The same bytes at an offset inside a larger buffer, as the server's read buffer holds them.
        let shifted = [0x58] + bytes
        precondition(outcome(shifted[1...], limit) == whole, "the parse depends on where the slice starts")
        guard case .parsed(.complete(let request, let headLength)) = whole else { continue }
        precondition(headLength > 0 && headLength <= bytes.count, "head length \(headLength) of \(bytes.count) bytes")
        precondition(bytes[..<headLength].suffix(4).elementsEqual([13, 10, 13, 10]), "a head that does not end in CRLF CRLF")
        precondition(outcome(bytes[..<headLength], limit) == .parsed(.complete(request, headLength: headLength)),
                     "the head alone parses differently")
        precondition(request.contentLength >= 0, "a negative Content-Length")
        _ = (request.path, request.query, request.wantsKeepAlive, request.acceptsGzip)
        precondition(!request.method.isEmpty && !request.target.isEmpty)
    }
    return 0
}

private enum Outcome: Equatable {
    case parsed(HTTPRequestParser.Result)
    case refused(HTTPRequestError)
}

private func outcome(_ bytes: ArraySlice<UInt8>, _ limit: Int) -> Outcome {
    do {
        return .parsed(try HTTPRequestParser.parse(bytes, maxHeadSize: limit))
    } catch {
        precondition([400, 414, 431, 501, 505].contains(error.status), "status \(error.status) for \(error)")
        precondition(!error.description.isEmpty)
        return .refused(error)
    }
}
