import Glibc
import Testing
import TCPTopCore

@Suite struct AddressTextTests {
    @Test(arguments: [
        ([127, 0, 0, 1] as [UInt8], "127.0.0.1"),
        ([0, 0, 0, 0], "0.0.0.0"),
        ([255, 255, 255, 255], "255.255.255.255"),
        ([10, 20, 30, 40, 99, 99], "10.20.30.40"),  // only the first 4 bytes count
    ])
    func ipv4(bytes: [UInt8], text: String) {
        #expect(addressText(family: .ipv4, bytes: bytes) == text)
    }

    @Test(arguments: [
        ("0000 0000 0000 0000 0000 0000 0000 0001", "::1"),
        ("0000 0000 0000 0000 0000 0000 0000 0000", "::"),
        ("0000 0000 0000 0000 0000 ffff 7f00 0001", "::ffff:127.0.0.1"),
        ("fe80 0000 0000 0000 0000 0000 0000 0001", "fe80::1"),
        ("fe80 0000 0000 0000 0a1b 2cff fe3d 4e5f", "fe80::a1b:2cff:fe3d:4e5f"),
        ("2001 0db8 0000 0000 0000 0000 0000 0001", "2001:db8::1"),
        ("2001 0db8 0000 0000 0001 0000 0000 0001", "2001:db8::1:0:0:1"),  // first of equal runs
        ("2001 0000 0000 0001 0000 0000 0000 0001", "2001:0:0:1::1"),      // longest run
        ("2001 0db8 0000 0001 0001 0001 0001 0001", "2001:db8:0:1:1:1:1:1"), // one zero stays
        ("0001 0000 0000 0000 0000 0000 0000 0000", "1::"),
        ("0000 0000 0000 0000 0000 0000 0002 0003", "::2:3"),
        ("ABCD EF01 2345 6789 ABCD EF01 2345 6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789"),
    ])
    func ipv6(hexWords: String, text: String) {
        #expect(addressText(family: .ipv6, bytes: bytes(hexWords)) == text)
    }

    /// Random zero-heavy addresses agree with glibc, except ::/96, where
    /// glibc writes the deprecated IPv4-compatible form.
    @Test func agreesWithInetNtop() {
        var generator = SplitMix64(state: 3)
        for _ in 0..<5000 {
            let words = (0..<8).map { _ in generator.next() % 2 == 0 ? 0 : UInt16(truncatingIfNeeded: generator.next()) }
            if words[0..<6].allSatisfy({ $0 == 0 }) { continue }
            let raw = words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
            #expect(addressText(family: .ipv6, bytes: raw) == inetNtop(raw))
        }
    }

    private func bytes(_ hexWords: String) -> [UInt8] {
        hexWords.split(separator: " ").flatMap { word -> [UInt8] in
            let value = UInt16(word, radix: 16)!
            return [UInt8(value >> 8), UInt8(value & 0xFF)]
        }
    }

    private func inetNtop(_ raw: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        raw.withUnsafeBytes { _ = inet_ntop(AF_INET6, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
