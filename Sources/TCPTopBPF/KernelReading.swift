import CTCPTop
import Glibc
import TCPTopCore

/// One consistent read of the kernel maps.
public struct KernelReading: Sendable {
    /// Every connection end in the kernel map; those marked closed were
    /// removed from the kernel by this read and will not appear again.
    public var connections: [ConnectionSample]
    /// Sockets whose owner is tracked in the kernel now.
    public var liveSockets: Int
    public var unattributed: UnattributedCounters
    /// kprobe hooks: calls whose return probe never ran (kretprobe maxactive
    /// exhausted) or whose entry probe did not. Bytes unknown; each is also
    /// one of `unattributed`'s events. Always 0 with the other hooks.
    public var missedCalls: UInt64
}

extension TCPTracer {
    /// The directory name the kernel side noted for cgroup `id` when an end
    /// was first seen in it (the cgroup may be gone since); nil if none.
    public func cgroupName(id: UInt64) -> String? {
        var key = id
        var value = tcptop_cgroup_name()
        guard bpf_map_lookup_elem(cgroupNamesFD, &key, &value) == 0 else { return nil }
        return withUnsafeBytes(of: value.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Reads every connection end, then moves closed ones out of the kernel.
    /// The order makes a socket destroyed during the read safe: live sockets
    /// are read before "closed_conns" (a socket destroyed in between appears
    /// in both, and its final counts win); shared entries are read after the
    /// set of closed cookies (an entry is only deleted once final).
    public func read() throws -> KernelReading {
        // Before the maps: a close counted after this is seen by the next poll.
        let closes = try statSum(TCPTOP_STAT_CLOSES)
        let closedCookies = Set(try batchRead(fd: closedCookiesFD, key: UInt64(0), value: UInt8(0)).map(\.0))
        let shared = try batchRead(fd: sharedConnectionsFD, key: tcptop_conn_key(), value: tcptop_conn_value())
        let owners = switch plan.readPath {
        case .storageIterator: try readStorageIterator()
        case .storageArray: try readStorageArray()
        case .socketHash: try readSocketHash()
        }
        let closed = try batchRead(fd: closedConnectionsFD, key: tcptop_conn_key(), value: tcptop_conn_value())

        var samples: [ConnectionSample] = []
        samples.reserveCapacity(owners.live.count + owners.closed.count + shared.count + closed.count)
        var seen = Set<ConnectionID>(minimumCapacity: owners.live.count + shared.count)
        func add(_ key: tcptop_conn_key, _ value: tcptop_conn_value, closed: Bool) {
            // tgid 0: a pending owner (the retransmit hook made the entry, no
            // process moved bytes on the socket yet). Not an end; if it closed
            // so, its retransmits are unattributed.
            guard key.tgid != 0 else {
                if closed { unownedRetransmits &+= value.retransmits }
                return
            }
            // connect() in progress: its local port is not known yet. And an
            // open end that has not moved a byte (an idle connection, made at
            // connect() for its outcome): shown once it moves bytes, fails or
            // closes, so that idle floods cost no series.
            if !closed && (value.connecting != 0
                || (value.sent_bytes == 0 && value.received_bytes == 0 && value.connect_error == 0)) { return }
            let id = ConnectionID(cookie: key.cookie, pid: key.tgid)
            let labels = labelCache[id] ?? sharingComm(Self.labels(pid: key.tgid, value: value))
            if !closed {
                labelCache[id] = labels
                seen.insert(id)
            }
            samples.append(ConnectionSample(
                id: id, labels: labels, sentBytes: value.sent_bytes, receivedBytes: value.received_bytes, closed: closed,
                retransmittedSegments: value.retransmits, smoothedRTTMicroseconds: value.srtt_us,
                lifecycle: Self.lifecycle(value)))
        }
        for record in owners.live { add(record.key, record.value, closed: false) }
        for (_, record) in owners.closed { add(record.key, record.value, closed: true) }
        for (key, value) in shared { add(key, value, closed: closedCookies.contains(key.cookie)) }
        for (key, value) in closed { add(key, value, closed: true) }

        if plan.readPath == .storageArray {
            try freeSlots(owners.closed.map { UInt32($0.0) })
        } else {
            for (var key, _) in owners.closed { _ = bpf_map_delete_elem(socketOwnersFD, &key) }
        }
        for (var key, _) in shared where closedCookies.contains(key.cookie) {
            _ = bpf_map_delete_elem(sharedConnectionsFD, &key)
        }
        for (var key, _) in closed { _ = bpf_map_delete_elem(closedConnectionsFD, &key) }
        for var cookie in closedCookies { _ = bpf_map_delete_elem(closedCookiesFD, &cookie) }
        if labelCache.count > seen.count {
            labelCache = labelCache.filter { seen.contains($0.key) }
        }
        let reading = KernelReading(connections: samples, liveSockets: owners.live.count, unattributed: try readStats(),
                                    missedCalls: try statSum(TCPTOP_STAT_MISSED_CALLS))
        // Only a read that succeeded moves the mark: after a failed one the
        // next poll reads the closed maps again.
        closesAtLastRead = closes
        return reading
    }

    /// The owners' counters: those of live sockets, and (socket hash only)
    /// final counts left in place because "closed_conns" was full, with the
    /// key to delete them by once taken.
    private typealias Owners = (live: [tcptop_conn_record], closed: [(UInt64, tcptop_conn_record)])

    /// Read path "socket_hash": one batch read of the owners' hash.
    private func readSocketHash() throws -> Owners {
        var owners: Owners = ([], [])
        for (address, owned) in try batchRead(fd: socketOwnersFD, key: UInt64(0), value: tcptop_sock_value()) {
            let record = tcptop_conn_record(key: tcptop_conn_key(cookie: owned.cookie, tgid: owned.owner_tgid, pad: 0),
                                            value: owned.conn)
            if owned.closed != 0 { owners.closed.append((address, record)) } else { owners.live.append(record) }
        }
        return owners
    }

    /// Read path "storage_array": the slots ever taken, read in place. Only
    /// this process frees a slot, so while it reads, a slot can only go from
    /// LIVE to CLOSED: a LIVE slot is copied and its state read again, and if
    /// it closed meanwhile it is copied once more, as final (the key is its
    /// index, to free it by). No end is missing from a read while its socket
    /// lives, and none is read as live after its final counts.
    private func readStorageArray() throws -> Owners {
        guard let slots else { return ([], []) }
        // Never-used slots are taken in order: those ever used are [0, taken).
        var zero: UInt32 = 0, taken: UInt64 = 0
        let err = bpf_map_lookup_elem(slotsTakenFD, &zero, &taken)
        if err != 0 { throw TracerError.libbpf("reading the slot count", code: err) }
        var owners: Owners = ([], [])
        func record(_ index: Int) -> tcptop_conn_record {
            let copy = slots.slot(index).pointee
            return tcptop_conn_record(key: tcptop_conn_key(cookie: copy.cookie, tgid: copy.tgid, pad: 0), value: copy.conn)
        }
        for index in 0..<Int(min(taken, UInt64(slots.count))) {
            var state = tcptop_load_acquire_u32(slots.state(index))
            guard state != TCPTOP_SLOT_FREE.rawValue else { continue }
            var copy = record(index)
            if state == TCPTOP_SLOT_LIVE.rawValue {
                state = tcptop_load_acquire_u32(slots.state(index))
                if state == TCPTOP_SLOT_LIVE.rawValue {
                    owners.live.append(copy)
                    continue
                }
                copy = record(index)  // closed while it was copied: its final counts
            }
            owners.closed.append((UInt64(index), copy))
        }
        return owners
    }

    /// Closed slots whose final counts were taken: FREE, then back on the
    /// kernel's free stack (a slot is never on it twice, nor in use there),
    /// marked as used before.
    private func freeSlots(_ indexes: [UInt32]) throws {
        guard let slots else { return }
        for slot in indexes {
            tcptop_store_release_u32(slots.state(Int(slot)), TCPTOP_SLOT_FREE.rawValue)
            var index = slot | TCPTOP_SLOT_REUSED
            let err = bpf_map_update_elem(freeSlotsFD, nil, &index, UInt64(BPF_ANY))
            if err != 0 { throw TracerError.libbpf("freeing a slot", code: err) }
        }
    }

    /// Read path "storage_iterator": one pass of the socket-storage iterator,
    /// a record per socket that has storage.
    private func readStorageIterator() throws -> Owners {
        guard let iteratorLink else { return ([], []) }
        let fd = bpf_iter_create(bpf_link__fd(iteratorLink))
        guard fd >= 0 else { throw TracerError.libbpf("starting the socket iterator", code: fd) }
        defer { close(fd) }
        let recordSize = MemoryLayout<tcptop_conn_record>.size
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw TracerError("reading the socket iterator: \(String(cString: strerror(errno)))")
            }
            bytes += buffer[0..<count]
        }
        guard bytes.count % recordSize == 0 else {
            throw TracerError("the socket iterator wrote \(bytes.count) bytes, not whole \(recordSize)-byte records")
        }
        let live = bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / recordSize)).map { raw.loadUnaligned(fromByteOffset: $0 * recordSize, as: tcptop_conn_record.self) }
        }
        return (live, [])
    }

    /// The labels with the process name's shared array.
    private func sharingComm(_ labels: ConnectionLabels) -> ConnectionLabels {
        var labels = labels
        if let known = commNames.firstIndex(of: labels.comm) {
            labels.comm = commNames[known]
        } else {
            if commNames.count >= 4096 { commNames.removeAll() }
            commNames.insert(labels.comm)
        }
        return labels
    }

    static func lifecycle(_ value: tcptop_conn_value) -> ConnectionLifecycle {
        ConnectionLifecycle(
            role: ConnectionLifecycle.Role(rawValue: value.role) ?? .unknown, established: value.established != 0,
            connectError: value.connect_error, connectMicroseconds: value.connect_us,
            lifetimeMicroseconds: value.lifetime_us, resetsSent: value.resets_sent, resetsReceived: value.resets_received)
    }

    static func labels(pid: UInt32, value: tcptop_conn_value) -> ConnectionLabels {
        let family: AddressFamily = value.family == UInt16(AF_INET6) ? .ipv6 : .ipv4
        let length = family == .ipv4 ? 4 : 16
        let local = withUnsafeBytes(of: value.laddr) { Array($0.prefix(length)) }
        let remote = withUnsafeBytes(of: value.raddr) { Array($0.prefix(length)) }
        let comm = withUnsafeBytes(of: value.comm) { Array($0.prefix { $0 != 0 }) }
        return ConnectionLabels(
            pid: pid, comm: comm, family: family,
            localAddress: addressText(family: family, bytes: local), localPort: value.lport,
            remoteAddress: addressText(family: family, bytes: remote), remotePort: value.rport,
            cgroupID: value.cgroup_id, uid: value.uid)
    }

    /// Reads a whole hash map with BPF_MAP_LOOKUP_BATCH: a few syscalls for
    /// the whole map instead of two per entry.
    private func batchRead<Key, Value>(fd: Int32, key: Key, value: Value) throws -> [(Key, Value)] {
        var chunk = 4096
        var result: [(Key, Value)] = []
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.stride
        // The kernel's cursor for hash maps is a bucket index (u32); 8 bytes is room enough.
        var cursor: UInt64 = 0, nextCursor: UInt64 = 0
        var first = true
        while true {
            var keys = [Key](repeating: key, count: chunk)
            var values = [Value](repeating: value, count: chunk)
            var count = UInt32(chunk)
            let err = first
                ? bpf_map_lookup_batch(fd, nil, &nextCursor, &keys, &values, &count, &options)
                : bpf_map_lookup_batch(fd, &cursor, &nextCursor, &keys, &values, &count, &options)
            if err != 0 && err != -ENOENT {
                if err == -ENOSPC && chunk < 1 << 22 { // one hash bucket held more than a chunk
                    chunk *= 4
                    continue
                }
                throw TracerError.libbpf("reading a BPF map", code: err)
            }
            for index in 0..<Int(count) { result.append((keys[index], values[index])) }
            if err == -ENOENT { return result }
            cursor = nextCursor
            first = false
        }
    }

    /// True when a tracked socket was destroyed since the last `read()`:
    /// one map lookup, so that polls between scrapes cost nothing when idle.
    public func hasClosesSinceLastRead() throws -> Bool {
        try statSum(TCPTOP_STAT_CLOSES) != closesAtLastRead
    }

    private func statSum(_ index: tcptop_stat) throws -> UInt64 {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw TracerError.libbpf("counting CPUs", code: Int32(cpus)) }
        var key = UInt32(index.rawValue)
        var perCPU = [UInt64](repeating: 0, count: cpus)
        let err = bpf_map_lookup_elem(statsFD, &key, &perCPU)
        if err != 0 { throw TracerError.libbpf("reading the BPF stats", code: err) }
        return perCPU.reduce(0, &+)
    }

    private func readStats() throws -> UnattributedCounters {
        let sum = statSum
        var counters = UnattributedCounters()
        counters.sentBytes = try sum(TCPTOP_STAT_UNATTRIBUTED_SENT_BYTES)
        counters.receivedBytes = try sum(TCPTOP_STAT_UNATTRIBUTED_RECEIVED_BYTES)
        counters.sendEvents = try sum(TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS)
        counters.receiveEvents = try sum(TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS)
        counters.closesNotRecorded = try sum(TCPTOP_STAT_CLOSED_NOT_RECORDED)
        counters.retransmittedSegments = try sum(TCPTOP_STAT_UNATTRIBUTED_RETRANSMITS) &+ unownedRetransmits
        return counters
    }
}
