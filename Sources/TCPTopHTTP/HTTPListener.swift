import Glibc

/// One `listen` failure, as a single line: `listen 127.0.0.1:9435: Address already in use`.
public struct HTTPBindError: Error, CustomStringConvertible, Sendable {
    public var address: String
    public var reason: String
    public var description: String { "listen \(address): \(reason)" }
}

/// A bound, listening socket; `address` shows the port actually bound.
struct HTTPListener {
    var fd: Int32
    var address: ListenAddress

    /// Binds every address `listen` names. "All addresses" is one IPv6
    /// socket that also takes IPv4 (V6ONLY off), or IPv4 only where the host
    /// has no IPv6. A name such as "localhost" binds each address it resolves to.
    static func bind(_ listen: ListenAddress, backlog: Int32) throws(HTTPBindError) -> [HTTPListener] {
        guard let host = listen.host else {
            var any6 = sockaddr_in6()
            any6.sin6_family = sa_family_t(AF_INET6)
            any6.sin6_port = listen.port.bigEndian
            any6.sin6_addr = in6addr_any
            if ipv6Available() {
                return [try bindOne(storage(of: any6), label: listen.description, backlog: backlog)]
            }
            var any4 = sockaddr_in()
            any4.sin_family = sa_family_t(AF_INET)
            any4.sin_port = listen.port.bigEndian
            return [try bindOne(storage(of: any4), label: listen.description, backlog: backlog)]
        }
        var listeners: [HTTPListener] = []
        do {
            for address in try resolve(host: host, port: listen.port) {
                listeners.append(try bindOne(address, label: nil, backlog: backlog))
            }
        } catch {
            for listener in listeners { close(listener.fd) }
            throw error
        }
        return listeners
    }

    private static func resolve(host: String, port: UInt16) throws(HTTPBindError) -> [sockaddr_storage] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            throw HTTPBindError(address: ListenAddress(host: host, port: port).description,
                                reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var addresses: [sockaddr_storage] = []
        var seen: Set<String> = []
        for entry in sequence(first: list, next: { $0?.pointee.ai_next }) {
            guard let info = entry?.pointee, let address = info.ai_addr else { continue }
            var item = sockaddr_storage()
            withUnsafeMutableBytes(of: &item) { $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(info.ai_addrlen))) }
            // getaddrinfo repeats addresses (e.g. "localhost" in /etc/hosts twice).
            if seen.insert(numericDescription(item)).inserted { addresses.append(item) }
        }
        return addresses
    }

    private static func bindOne(_ address: sockaddr_storage, label: String?, backlog: Int32) throws(HTTPBindError) -> HTTPListener {
        let display = label ?? numericDescription(address)
        let fail = { (call: String) -> HTTPBindError in
            HTTPBindError(address: display, reason: call + String(cString: strerror(errno)))
        }
        let family = Int32(address.ss_family)
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw fail("socket: ") }
        var on: Int32 = 1, off: Int32 = 0
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 {
            // The any-address socket (::) takes IPv4 too; a specific one, e.g. ::1, stays IPv6.
            var value = isUnspecifiedIPv6(address) ? off : on
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        var storage = address
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length(of: family)) }
        }
        guard bound == 0 else { let error = fail(""); close(fd); throw error }
        guard Glibc.listen(fd, backlog) == 0 else { let error = fail("listen: "); close(fd); throw error }
        return HTTPListener(fd: fd, address: localAddress(fd))
    }

    /// False on hosts booted with IPv6 disabled: there ":port" means IPv4 only.
    private static func ipv6Available() -> Bool {
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd >= 0 { close(fd) }
        return fd >= 0 || errno != EAFNOSUPPORT
    }

    private static func isUnspecifiedIPv6(_ address: sockaddr_storage) -> Bool {
        var storage = address
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                withUnsafeBytes(of: pointer.pointee.sin6_addr) { $0.allSatisfy { $0 == 0 } }
            }
        }
    }

    /// The address the kernel actually bound (the real port when asked for 0).
    private static func localAddress(_ fd: Int32) -> ListenAddress {
        var storage = sockaddr_storage()
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) }
        }
        return ListenAddress(host: numericHost(storage), port: port(of: storage))
    }

    static func numericDescription(_ address: sockaddr_storage) -> String {
        ListenAddress(host: numericHost(address), port: port(of: address)).description
    }

    private static func numericHost(_ address: sockaddr_storage) -> String {
        var storage = address
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafePointer(to: &storage) { pointer in
            let raw = UnsafeRawPointer(pointer)
            if Int32(address.ss_family) == AF_INET6 {
                let addr = raw.advanced(by: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!)
                _ = inet_ntop(AF_INET6, addr, &text, socklen_t(text.count))
            } else {
                let addr = raw.advanced(by: MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!)
                _ = inet_ntop(AF_INET, addr, &text, socklen_t(text.count))
            }
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func port(of address: sockaddr_storage) -> UInt16 {
        var storage = address
        return withUnsafePointer(to: &storage) { pointer in
            Int32(address.ss_family) == AF_INET6
                ? pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                : pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    private static func length(of family: Int32) -> socklen_t {
        socklen_t(family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    private static func storage<T>(of address: T) -> sockaddr_storage {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { destination in
            withUnsafeBytes(of: address) { destination.copyMemory(from: $0) }
        }
        return storage
    }
}
