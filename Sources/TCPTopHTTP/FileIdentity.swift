import Glibc

/// What stat(2) says of a file that changes when it is written or replaced.
package struct FileIdentity: Equatable, Sendable {
    /// Why stat(2) failed: an errno text.
    package struct StatError: Error, Equatable, Sendable {
        package var reason: String
    }

    package var device: UInt64
    package var inode: UInt64
    package var size: Int64
    package var modified: Int64
    package var changed: Int64

    package static func of(_ path: String) -> Result<FileIdentity, StatError> {
        var info = stat()
        guard stat(path, &info) == 0 else { return .failure(StatError(reason: String(cString: strerror(errno)))) }
        func nanoseconds(_ time: timespec) -> Int64 { Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec) }
        return .success(FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                                     modified: nanoseconds(info.st_mtim), changed: nanoseconds(info.st_ctim)))
    }

    /// File times come from a coarse clock (a tick of up to 10 ms): within a
    /// second of the last write, another one may not have moved mtime.
    package var isRecent: Bool {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let nowNanoseconds = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
        return nowNanoseconds - modified < 1_000_000_000
    }
}
