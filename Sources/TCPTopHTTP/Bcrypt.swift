import CTCPTop
import Glibc

/// bcrypt through Debian's libcrypt (libxcrypt): no crypto of our own.
public enum Bcrypt {
    /// bcrypt's own base64 alphabet (salt and hash are written in it).
    private static let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)

    /// The cost of a hash in the form `htpasswd -nbBC 10` and python3-bcrypt
    /// write: `$2a$`, `$2b$` or `$2y$`, a two-digit cost 04 to 31, `$`, then
    /// 53 characters (22 of salt, 31 of hash); nil for anything else.
    public static func cost(of hash: String) -> Int? {
        let bytes = Array(hash.utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
              [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(bytes[2]),
              bytes[3] == UInt8(ascii: "$"), bytes[6] == UInt8(ascii: "$"),
              let cost = Int(String(decoding: bytes[4...5], as: UTF8.self)), (4...31).contains(cost),
              bytes[7...].allSatisfy(alphabet.contains) else { return nil }
        return cost
    }

    /// crypt(3) of `password` with the salt and cost that `setting` (a hash,
    /// or its first 29 characters) carries; nil when libcrypt refuses (a
    /// malformed setting) or the password holds a NUL, which C strings cannot.
    public static func hash(password: [UInt8], setting: String) -> [UInt8]? {
        guard !password.contains(0) else { return nil }
        var phrase = password.map { CChar(bitPattern: $0) } + [0]
        // crypt_ra allocates its ~32 KiB work area itself (struct crypt_data
        // would reach Swift as a tuple of tens of thousands of elements).
        var data: UnsafeMutableRawPointer?
        var size: Int32 = 0
        defer {
            // The work area and the copy of the password held secret state.
            phrase.withUnsafeMutableBytes { explicit_bzero($0.baseAddress!, $0.count) }
            if let data { explicit_bzero(data, Int(size)); free(data) }
        }
        guard let output = crypt_ra(phrase, setting, &data, &size) else { return nil }
        let result = Array(UnsafeBufferPointer(start: output, count: strlen(output))).map { UInt8(bitPattern: $0) }
        // libxcrypt may answer a failure token ("*0", "*1") instead of NULL.
        guard result.first == UInt8(ascii: "$") else { return nil }
        return result
    }

    /// Whether `password` hashes to `hash`; the two hashes are compared in
    /// constant time.
    public static func verify(password: [UInt8], hash: String) -> Bool {
        guard let computed = Self.hash(password: password, setting: hash) else { return false }
        return constantTimeEqual(computed, Array(hash.utf8))
    }

    /// Compares every byte whatever differs first, so the time taken says
    /// nothing about where two hashes part.
    @inline(never)
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<min(a.count, b.count) { difference |= a[index] ^ b[index] }
        return difference == 0 && a.count == b.count
    }
}
