import CTCPTop
import Glibc

extension TCPTracer {
    /// Makes each kind of bpf() call a read makes, on the maps and links
    /// already open, without changing what they hold: a lookup, a batch
    /// lookup, a delete of a key that is never there, and a pass of the socket
    /// iterator (read path storage_iterator). Throws the first the kernel
    /// refuses (e.g. EPERM when reading needs a capability this thread
    /// lacks). The storage_array slots are mapped at start: nothing to try.
    public func checkReadAccess() throws {
        _ = try hasClosesSinceLastRead()  // BPF_MAP_LOOKUP_ELEM (per-CPU stats)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.stride
        var nextCursor: UInt64 = 0
        var keys = [UInt64](repeating: 0, count: 1), values = [UInt8](repeating: 0, count: 1)
        var count: UInt32 = 1
        // One entry or none: ENOENT (the map ended) and ENOSPC are answers, not refusals.
        let batch = bpf_map_lookup_batch(closedCookiesFD, nil, &nextCursor, &keys, &values, &count, &options)
        if batch != 0 && batch != -ENOENT && batch != -ENOSPC { throw TracerError.libbpf("BPF_MAP_LOOKUP_BATCH", code: batch) }
        var never: UInt64 = 0  // socket cookies start at 1
        let deleted = bpf_map_delete_elem(closedCookiesFD, &never)
        if deleted != 0 && deleted != -ENOENT { throw TracerError.libbpf("BPF_MAP_DELETE_ELEM", code: deleted) }
        if let iteratorLink {
            let fd = bpf_iter_create(bpf_link__fd(iteratorLink))
            guard fd >= 0 else { throw TracerError.libbpf("BPF_ITER_CREATE", code: fd) }
            close(fd)  // the pass is not read: nothing is taken from the maps
        }
    }
}
