import Synchronization

/// Checks `Authorization: Basic` credentials against bcrypt hashes, with a
/// bounded cache of outcomes (successes and failures) so a flood of the same
/// credentials costs one bcrypt, not one each. Bcrypts run one at a time,
/// as in exporter-toolkit: new credentials cannot take more than one core.
public final class BasicAuthenticator: Sendable {
    /// Entries kept (about 40 bytes each); past it the older half goes.
    public static let defaultCapacity = 4096

    private let cache: Locked<OutcomeCache>
    private let bcryptTurn = Locked(())
    private let bcryptRuns = Atomic<Int>(0)
    /// Mixed into every cache key: the keys say nothing outside this process.
    private let secret: (UInt64, UInt64)

    public init(capacity: Int = BasicAuthenticator.defaultCapacity) {
        cache = Locked(OutcomeCache(capacity: max(2, capacity)))
        var random = SystemRandomNumberGenerator()
        secret = (random.next(), random.next())
    }

    /// bcrypts computed so far (cache misses), for tests and figures.
    public var bcryptCount: Int { bcryptRuns.load(ordering: .relaxed) }

    var cachedOutcomes: Int { cache.withLock { $0.count } }

    /// Whether `authorization` (the header's value) holds the user name and
    /// password of one of `users` (name → bcrypt hash). A user name that is
    /// not there is checked against a made-up hash of the same cost, so that
    /// the time taken does not tell which names exist.
    public func allows(authorization: String?, users: [String: String]) -> Bool {
        guard !users.isEmpty, let authorization, let (user, password) = Self.credentials(authorization) else { return false }
        // Names compare as bytes (a Swift String compares canonically equivalent ones equal).
        let known = users.first { $0.key.utf8.elementsEqual(user) }
        let stored = known?.value ?? Self.decoyHash(cost: users.values.lazy.compactMap(Bcrypt.cost).max() ?? 10)
        let key = cacheKey(user: user, password: password, stored: stored)
        if let outcome = cache.withLock({ $0.outcome(key) }) { return outcome && known != nil }
        let outcome = bcryptTurn.withLock { _ in
            // Another request may have computed it while this one waited.
            if let outcome = cache.withLock({ $0.outcome(key) }) { return outcome }
            bcryptRuns.add(1, ordering: .relaxed)
            let outcome = Bcrypt.verify(password: password, hash: stored)
            cache.withLock { $0.record(key, outcome) }
            return outcome
        }
        return outcome && known != nil
    }

    /// A valid bcrypt setting no password matches in practice (its hash is never stored).
    private static func decoyHash(cost: Int) -> String {
        "$2b$\(cost < 10 ? "0" : "")\(cost)$" + String(repeating: ".", count: 53)
    }

    /// 128 bits from two keyed SipHash runs over (user, password, stored
    /// hash), each length-prefixed. Not the plaintext: a cached success can
    /// only be reached by presenting the same password again (finding
    /// another input with the same 128 bits needs the password to aim at).
    private func cacheKey(user: [UInt8], password: [UInt8], stored: String) -> CacheKey {
        func run(_ domain: UInt8) -> UInt64 {
            var hasher = Hasher()
            hasher.combine(secret.0)
            hasher.combine(secret.1)
            hasher.combine(domain)
            for part in [user, password] {
                hasher.combine(part.count)
                part.withUnsafeBytes { hasher.combine(bytes: $0) }
            }
            var stored = stored
            stored.withUTF8 { hasher.combine($0.count); hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
            return UInt64(bitPattern: Int64(hasher.finalize()))
        }
        return CacheKey(high: run(1), low: run(2))
    }

    /// User name and password of a `Basic` credential (RFC 7617): the part
    /// before the first ":" is the name. nil when it is not one.
    static func credentials(_ value: String) -> (user: [UInt8], password: [UInt8])? {
        let text = value.trimmingWhitespace()
        guard text.utf8.count > 6, text.utf8.prefix(6).map({ $0 | 0x20 }).elementsEqual("basic ".utf8),
              let decoded = Base64.decode(String(decoding: text.utf8.dropFirst(6), as: UTF8.self).trimmingWhitespace()),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        return (Array(decoded[..<colon]), Array(decoded[(colon + 1)...]))
    }
}

struct CacheKey: Hashable, Sendable {
    var high: UInt64
    var low: UInt64
}

/// Two generations: new outcomes go to `current`; when it holds half the
/// capacity it becomes `previous` and the older one is dropped. A hit in
/// `previous` moves back to `current`, so credentials in use stay.
struct OutcomeCache: Sendable {
    let capacity: Int
    private var current: [CacheKey: Bool] = [:]
    private var previous: [CacheKey: Bool] = [:]

    init(capacity: Int) { self.capacity = capacity }

    var count: Int { current.count + previous.count }

    mutating func outcome(_ key: CacheKey) -> Bool? {
        if let outcome = current[key] { return outcome }
        guard let outcome = previous.removeValue(forKey: key) else { return nil }
        record(key, outcome)
        return outcome
    }

    mutating func record(_ key: CacheKey, _ outcome: Bool) {
        if current.count >= capacity / 2 {
            previous = current
            current = [:]
        }
        current[key] = outcome
    }
}

/// The `Authorization` value a client sends for these credentials.
public func basicAuthorization(user: String, password: String) -> String {
    "Basic " + Base64.encode(Array("\(user):\(password)".utf8))
}

/// Standard base64 with padding (RFC 4648 §4), strictly: what `Basic` credentials use.
enum Base64 {
    static func encode(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var output: [UInt8] = []
        for start in stride(from: 0, to: bytes.count, by: 3) {
            let group = bytes[start..<min(start + 3, bytes.count)]
            var word = UInt32(0)
            for (index, byte) in group.enumerated() { word |= UInt32(byte) << (16 - 8 * UInt32(index)) }
            for index in 0..<4 {
                output.append(index <= group.count ? alphabet[Int((word >> (18 - 6 * UInt32(index))) & 63)] : UInt8(ascii: "="))
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let bytes = text.utf8
        guard bytes.count % 4 == 0 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count / 4 * 3)
        var word: UInt32 = 0, filled = 0, padding = 0
        for byte in bytes {
            if byte == UInt8(ascii: "=") {
                padding += 1
            } else {
                // Nothing may follow padding.
                guard padding == 0, let value = sextet(byte) else { return nil }
                word = word << 6 | UInt32(value)
            }
            filled += 1
            guard filled == 4 else { continue }
            // Padding only ends the text, one or two characters of it.
            guard padding <= 2 else { return nil }
            word <<= 6 * UInt32(padding)
            output.append(UInt8(word >> 16))
            if padding < 2 { output.append(UInt8((word >> 8) & 0xFF)) }
            if padding < 1 { output.append(UInt8(word & 0xFF)) }
            (word, filled) = (0, 0)
        }
        return output
    }

    private static func sextet(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
