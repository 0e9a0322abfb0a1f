import Foundation

/// An address prefix such as 10.2.0.0/16 or fc00::/7.
public struct IPPrefix: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 (IPv6), host bits zero.
    public let bytes: [UInt8]
    public let length: Int

    /// Parses "ADDRESS/LENGTH"; the problem in words when it is not one.
    public static func parse(_ text: String) -> Result<IPPrefix, PrefixError> {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let length = Int(parts[1]), parts[1].allSatisfy(\.isNumber) else {
            return .failure(PrefixError("must be an address prefix like 10.0.0.0/8 or fc00::/7, got \"\(text)\""))
        }
        guard let bytes = addressBytes(String(parts[0])) else {
            return .failure(PrefixError("\"\(parts[0])\" in \"\(text)\" is not an IPv4 or IPv6 address"))
        }
        guard length <= bytes.count * 8 else {
            return .failure(PrefixError("the prefix length of \"\(text)\" must be 0 to \(bytes.count * 8)"))
        }
        let masked = IPPrefix(bytes: bytes, length: length, masking: true)
        guard masked.bytes == bytes else {
            return .failure(PrefixError("\"\(text)\" has bits set past its /\(length): did you mean \(masked)?"))
        }
        return .success(masked)
    }

    private init(bytes: [UInt8], length: Int, masking: Bool) {
        var bytes = bytes
        for index in bytes.indices {
            let kept = min(8, max(0, length - index * 8))
            bytes[index] &= kept == 8 ? 0xFF : ~(0xFF >> kept)
        }
        self.bytes = bytes
        self.length = length
    }

    public func contains(_ address: [UInt8]) -> Bool {
        guard address.count == bytes.count else { return false }
        var index = 0, bits = length
        while bits >= 8 {
            if address[index] != bytes[index] { return false }
            index += 1
            bits -= 8
        }
        return bits == 0 || address[index] & ~(0xFF >> bits) == bytes[index]
    }

    public var description: String {
        "\(addressText(family: bytes.count == 4 ? .ipv4 : .ipv6, bytes: bytes))/\(length)"
    }

    public struct PrefixError: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }
}

/// The 4 or 16 bytes of an address written as text; nil if it is not one.
func addressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

/// A name for a set of prefixes (`networks: {db: [10.2.0.0/16]}`).
public struct NamedNetwork: Equatable, Sendable {
    public var name: String
    public var prefixes: [IPPrefix]
    public init(name: String, prefixes: [IPPrefix]) {
        self.name = name
        self.prefixes = prefixes
    }

    /// The networks of the shipped config: loopback, link-local, private
    /// (RFC 1918, shared address space, unique local), and the rest.
    public static let shipped: [NamedNetwork] = [
        ("loopback", ["127.0.0.0/8", "::1/128"]),
        ("link_local", ["169.254.0.0/16", "fe80::/10"]),
        ("private", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]),
        ("internet", ["0.0.0.0/0", "::/0"]),
    ].map { name, prefixes in NamedNetwork(name: name, prefixes: prefixes.map { try! IPPrefix.parse($0).get() }) }
}

/// The `remote_network` of a remote address: the name of the network with
/// the narrowest prefix that holds it (an IPv4-mapped IPv6 address, as a
/// dual-stack socket shows an IPv4 peer, is matched as the IPv4 one).
/// Results are cached by address text. Not thread-safe (the registry's).
public final class RemoteNetworkNames {
    /// The value of an address in none of the networks.
    public static let other = "other"
    private let prefixes: [(prefix: IPPrefix, name: String)]
    private var cache: [String: String] = [:]

    public init(_ networks: [NamedNetwork]) {
        // Longest first: the first match is the narrowest.
        prefixes = networks.flatMap { network in network.prefixes.map { ($0, network.name) } }
            .sorted { $0.prefix.length > $1.prefix.length }
    }

    public func name(of address: String) -> String {
        if let known = cache[address] { return known }
        let name = match(address)
        if cache.count >= 65536 { cache.removeAll() }
        cache[address] = name
        return name
    }

    private func match(_ address: String) -> String {
        guard var bytes = addressBytes(address) else { return Self.other }
        if bytes.count == 16 && bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            bytes = Array(bytes[12...])
        }
        return prefixes.first { $0.prefix.contains(bytes) }?.name ?? Self.other
    }
}
