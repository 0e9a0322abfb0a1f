import Foundation

/// What a cgroup v2 path says of who runs in it: the systemd unit and,
/// where the path names one, the container.
public struct CgroupAttribution: Sendable, Equatable {
    /// As in /proc/PID/cgroup's "0::" line, e.g. "/system.slice/nginx.service"; "" unknown.
    public var path: String
    /// The deepest component that is a systemd unit (service, scope or
    /// slice), e.g. "nginx.service", "session-3.scope"; "" if none is.
    public var unit: String
    /// The deepest container the path names: the 64-hex id of a docker,
    /// containerd, CRI-O or podman container, or the name of a
    /// systemd-nspawn machine (or other machined scope) or LXC container; "" if none.
    public var container: String

    public init(path: String) {
        self.path = path
        unit = ""
        container = ""
        for component in path.split(separator: "/") {
            if Self.isUnit(component) { unit = String(component) }
            if let found = Self.container(in: component) { container = found }
        }
    }

    private static func isUnit(_ component: Substring) -> Bool {
        component.hasSuffix(".service") || component.hasSuffix(".scope") || component.hasSuffix(".slice")
    }

    /// The container one path component names, if it names one.
    static func container(in component: Substring) -> String? {
        if isContainerID(component) { return String(component) }  // docker's, kubelet's cgroupfs driver
        if component.hasSuffix(".scope") {
            let name = component.dropLast(".scope".count)
            // docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope (not libpod-conmon-ID)
            for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] where name.hasPrefix(prefix) {
                let id = name.dropFirst(prefix.count)
                if isContainerID(id) { return String(id) }
            }
            // systemd-machined's scopes: machine-NAME.scope (nspawn -M, libvirt)
            if name.hasPrefix("machine-") { return unescapedUnitName(name.dropFirst("machine-".count)) }
        }
        // systemd-nspawn@NAME.service (machinectl start, the nspawn@ template)
        if component.hasPrefix("systemd-nspawn@") && component.hasSuffix(".service") {
            return unescapedUnitName(component.dropFirst("systemd-nspawn@".count).dropLast(".service".count))
        }
        if component.hasPrefix("lxc.payload.") { return String(component.dropFirst("lxc.payload.".count)) }
        return nil
    }

    private static func isContainerID(_ text: Substring) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// systemd writes a "-" inside a unit-name instance as "\x2d" (and other bytes so).
    private static func unescapedUnitName(_ name: Substring) -> String {
        guard name.contains("\\x") else { return String(name) }
        var bytes: [UInt8] = []
        var rest = Array(name.utf8)[...]
        while let first = rest.first {
            if first == UInt8(ascii: "\\"), rest.count >= 4, rest[rest.startIndex + 1] == UInt8(ascii: "x"),
               let value = UInt8(String(decoding: rest[(rest.startIndex + 2)..<(rest.startIndex + 4)], as: UTF8.self), radix: 16) {
                bytes.append(value)
                rest = rest.dropFirst(4)
            } else {
                bytes.append(first)
                rest = rest.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Turns the cgroup ids and uids the kernel side captured into paths,
/// units, containers and user names, with caches: a new connection costs a
/// dictionary look-up, a cgroup not seen before one walk of the cgroup v2
/// tree (at most one per read).
///
/// Not thread-safe: the registry calls it under its caller's serialisation.
public final class AttributionNames {
    /// Where the cgroup v2 hierarchy is mounted ("/sys/fs/cgroup", or
    /// "/sys/fs/cgroup/unified" on a hybrid host); nil: none is.
    public let cgroupMount: String?
    private var cgroups: [UInt64: CgroupAttribution] = [:]
    private var users: [UInt32: String] = [:]
    /// Ids still unknown after a walk: their cgroup was gone by then (ids are not reused).
    private var missing: Set<UInt64> = []
    private var walkedThisRead = false
    /// Bounds on the caches: past them they start again (a host with more
    /// cgroups than this is walked again as their ids come up).
    static let cacheLimit = 65536

    /// Names the kernel side noted for cgroup ids, for those gone from the tree.
    private let kernelNames: ((UInt64) -> String?)?

    /// `kernelNames`: the directory name of a cgroup by id as the kernel
    /// side noted it when an end was first seen there (`TCPTracer.cgroupName`).
    public init(cgroupMount: String? = AttributionNames.findCgroup2Mount(), kernelNames: ((UInt64) -> String?)? = nil) {
        self.cgroupMount = cgroupMount
        self.kernelNames = kernelNames
    }

    /// A new kernel read starts: a cgroup not known yet may walk the tree once more.
    public func beginRead() { walkedThisRead = false }

    /// The cgroup with kernel id `id` (0: unknown), the cgroup of process `pid` when it was first seen.
    public func cgroup(id: UInt64, pid: UInt32) -> CgroupAttribution {
        guard id != 0, let mount = cgroupMount else { return CgroupAttribution(path: "") }
        if let known = cgroups[id] { return known }
        if missing.contains(id) { return CgroupAttribution(path: "") }
        // The process's own cgroup first: one small read, and right unless it moved since.
        if let path = Self.cgroupPath(ofProcess: pid), Self.inode(of: path == "/" ? mount : mount + path) == id {
            return remember(id, path: path)
        }
        if !walkedThisRead {
            walkedThisRead = true
            if cgroups.count + missing.count > Self.cacheLimit {
                cgroups.removeAll()
                missing.removeAll()
            }
            walk(mount, relative: "/")
            if let known = cgroups[id] { return known }
        }
        guard walkedThisRead else { return CgroupAttribution(path: "") }
        // Gone from the tree (ids are not reused): its path is unknown, but
        // the name the kernel side noted still tells the unit and container.
        if let name = kernelNames?(id), !name.isEmpty, !name.contains("/") {
            var attribution = CgroupAttribution(path: "/" + name)
            attribution.path = ""
            cgroups[id] = attribution
            return attribution
        }
        missing.insert(id)
        return CgroupAttribution(path: "")
    }

    /// The name of `uid` in the user database, else the number; "" if unknown.
    public func userName(uid: UInt32) -> String {
        guard uid != ConnectionLabels.unknownUID else { return "" }
        if let known = users[uid] { return known }
        if users.count > Self.cacheLimit { users.removeAll() }
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let name: String
        if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let cName = entry.pw_name {
            name = String(cString: cName)
        } else {
            name = String(uid)
        }
        users[uid] = name
        return name
    }

    private func remember(_ id: UInt64, path: String) -> CgroupAttribution {
        let attribution = CgroupAttribution(path: path)
        cgroups[id] = attribution
        return attribution
    }

    /// Every directory under `mount` by inode (a cgroup's id is its directory's inode).
    private func walk(_ mount: String, relative: String) {
        var stack = [relative]
        while let path = stack.popLast() {
            let full = path == "/" ? mount : mount + path
            guard let directory = opendir(full) else { continue }
            defer { closedir(directory) }
            if let id = Self.inode(of: full), cgroups[id] == nil { _ = remember(id, path: path) }
            while let entry = readdir(directory) {
                guard entry.pointee.d_type == DT_DIR else { continue }
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { continue }
                stack.append(path == "/" ? "/" + name : path + "/" + name)
            }
        }
    }

    static func inode(of path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt64(info.st_ino)
    }

    /// The cgroup v2 id of process `pid`'s cgroup now (what the kernel side
    /// captures for it); nil without a cgroup2 mount or such a process.
    public static func cgroupID(ofProcess pid: UInt32, mount: String? = findCgroup2Mount()) -> UInt64? {
        guard let mount, let path = cgroupPath(ofProcess: pid) else { return nil }
        return inode(of: path == "/" ? mount : mount + path)
    }

    /// The "0::PATH" line of /proc/PID/cgroup: the process's cgroup v2 path.
    static func cgroupPath(ofProcess pid: UInt32) -> String? {
        guard pid != 0, case .success(let bytes) = readWholeFile("/proc/\(pid)/cgroup") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    /// The mount point of the first cgroup2 file system in /proc/self/mountinfo.
    public static func findCgroup2Mount() -> String? {
        guard case .success(let bytes) = readWholeFile("/proc/self/mountinfo") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields[dash + 1] == "cgroup2",
                  fields.count > 4 else { continue }
            return String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
        }
        return nil
    }
}
