/// A `host:port` the HTTP server listens on.
/// `:9435` (no host) means every IPv4 and IPv6 address; IPv6 literals are
/// bracketed as in URLs (`[::1]:9435`) so the port can't be mistaken for a group.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 or IPv6 literal (without brackets) or a host name; nil = all addresses.
    public var host: String?
    public var port: UInt16

    public init(host: String?, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// The host is an IPv6 literal (it has to be bracketed in text).
    public var isIPv6Literal: Bool { host?.contains(":") ?? false }

    public var description: String {
        guard let host else { return ":\(port)" }
        return isIPv6Literal ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public static func parse(_ text: String) throws -> ListenAddress {
        func invalid(_ problem: String) -> ListenAddressError {
            ListenAddressError(problem: "\(problem), got \"\(text)\"")
        }
        guard let colon = text.lastIndex(of: ":") else {
            throw invalid("missing port (expected host:port, [ipv6]:port or :port)")
        }
        let hostPart = text[..<colon]
        let port = try parsePort(text[text.index(after: colon)...], invalid: invalid)

        if hostPart.isEmpty { return ListenAddress(host: nil, port: port) }
        if hostPart.first == "[" {
            guard hostPart.last == "]", hostPart.count > 2 else { throw invalid("unterminated or empty [ipv6] literal") }
            let literal = hostPart.dropFirst().dropLast()
            guard isValidIPv6Literal(literal) else {
                throw invalid("brackets must hold an IPv6 address")
            }
            return ListenAddress(host: String(literal), port: port)
        }
        if hostPart.contains(":") {
            throw invalid("an IPv6 address must be in brackets, like [::1]:\(port)")
        }
        let labels = hostPart.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.allSatisfy({ !$0.isEmpty && $0.allSatisfy(isHostNameCharacter) }) else {
            throw invalid("host must be an IP address or a host name")
        }
        return ListenAddress(host: String(hostPart), port: port)
    }

    private static func parsePort(
        _ text: Substring, invalid: (String) -> ListenAddressError
    ) throws -> UInt16 {
        guard !text.isEmpty else { throw invalid("missing port") }
        guard text.allSatisfy(\.isASCIIDigit), let port = Int(text), port >= 1, port <= 65535 else {
            throw invalid("port must be a number between 1 and 65535")
        }
        return UInt16(port)
    }
}

public struct ListenAddressError: Error, Equatable, CustomStringConvertible {
    public var problem: String
    public var description: String { problem }
}

/// Hex groups and colons, maybe an embedded IPv4 tail, maybe a `%zone`
/// suffix. A loose check: the socket layer rejects what slips through.
private func isValidIPv6Literal(_ text: Substring) -> Bool {
    let parts = text.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
    let address = parts[0]
    guard address.contains(":"), address.allSatisfy({ $0.isASCII && ($0.isHexDigit || $0 == ":" || $0 == ".") }) else {
        return false
    }
    guard parts.count == 2 else { return true }
    return !parts[1].isEmpty && parts[1].allSatisfy(isHostNameCharacter)
}

private func isHostNameCharacter(_ character: Character) -> Bool {
    character.isASCII && (character.isLetter || character.isNumber || character == "-" || character == "_")
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isWholeNumber }
}
