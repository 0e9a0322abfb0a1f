/// Plain Swift values for what the kernel side counts. The BPF reader
/// produces them; the registry, the exposition writer and tcptop consume them.

public enum AddressFamily: String, Sendable, Hashable, CaseIterable {
    case ipv4, ipv6
}

/// Identifies one connection end as seen by one process: the kernel's socket
/// cookie (unique for the boot) and the process id (tgid).
public struct ConnectionID: Hashable, Sendable {
    public var cookie: UInt64
    public var pid: UInt32
    public init(cookie: UInt64, pid: UInt32) {
        self.cookie = cookie
        self.pid = pid
    }
}

/// The labels of one connection end. `comm` keeps the kernel's raw bytes
/// (up to 15, NUL removed): a process may put any byte in its name, and
/// turning it into valid UTF-8 text is the writer's job.
///
/// Fields are ordered by size (references first) so a value takes 64 bytes,
/// not 80: a read of a million connections holds a million of them.
public struct ConnectionLabels: Hashable, Sendable {
    public var comm: [UInt8]
    public var localAddress: String
    public var remoteAddress: String
    /// The cgroup v2 id of the process when the kernel first saw the end
    /// (the inode of its cgroup directory); 0: unknown.
    public var cgroupID: UInt64
    public var pid: UInt32
    /// The process's uid (initial user namespace); `unknownUID`: unknown.
    public var uid: UInt32
    public var localPort: UInt16
    public var remotePort: UInt16
    public var family: AddressFamily

    public static let unknownUID = UInt32.max

    public init(
        pid: UInt32, comm: [UInt8], family: AddressFamily,
        localAddress: String, localPort: UInt16, remoteAddress: String, remotePort: UInt16,
        cgroupID: UInt64 = 0, uid: UInt32 = ConnectionLabels.unknownUID
    ) {
        self.pid = pid
        self.comm = comm
        self.family = family
        self.localAddress = localAddress
        self.localPort = localPort
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.cgroupID = cgroupID
        self.uid = uid
    }

    /// The process name as text; bytes that are not UTF-8 become U+FFFD.
    public var commText: String { String(decoding: comm, as: UTF8.self) }
}

/// One read of one connection end's counters: 144 bytes apart in an array
/// (a read of a million holds a million; the cgroup id and uid added 16).
public struct ConnectionSample: Sendable, Equatable {
    public var id: ConnectionID
    public var sentBytes: UInt64
    public var receivedBytes: UInt64
    public var labels: ConnectionLabels
    /// The kernel destroyed the socket: these counters are final.
    public var closed: Bool
    /// The kernel's smoothed round-trip time of the socket (tcp_sock.srtt_us),
    /// in microseconds, as of this read (or of its close); 0 while unknown
    /// (no RTT sample yet, or an end of a process sharing the socket).
    public var smoothedRTTMicroseconds: UInt32
    /// TCP segments the kernel retransmitted on the socket (tcp:tcp_retransmit_skb,
    /// each skb counted as its segments), shown on the socket's owner's end
    /// only: 0 on the ends of other processes sharing the socket.
    public var retransmittedSegments: UInt64
    /// What the kernel's state changes said of the connection, on the
    /// socket's owner's end (all unknown on other processes' ends).
    public var lifecycle: ConnectionLifecycle

    public init(id: ConnectionID, labels: ConnectionLabels, sentBytes: UInt64, receivedBytes: UInt64, closed: Bool,
                retransmittedSegments: UInt64 = 0, smoothedRTTMicroseconds: UInt32 = 0,
                lifecycle: ConnectionLifecycle = ConnectionLifecycle()) {
        self.id = id
        self.labels = labels
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
        self.closed = closed
        self.retransmittedSegments = retransmittedSegments
        self.smoothedRTTMicroseconds = smoothedRTTMicroseconds
        self.lifecycle = lifecycle
    }
}

/// A connection's life as sock:inet_sock_set_state and the reset
/// tracepoints saw it, for the socket's owner's end. Facts only move forward
/// from read to read: a role, once known, stays; a duration, once set, stays.
public struct ConnectionLifecycle: Sendable, Equatable {
    public enum Role: UInt8, Sendable {
        /// Opened before the tracer started, or its opening not seen.
        case unknown = 0
        /// connect(): SYN sent by this socket.
        case client = 1
        /// accept(): the handshake completed on a listener's child socket.
        case server = 2
    }

    public var role: Role
    /// Reached ESTABLISHED while traced (a client's connect succeeded; a
    /// server's handshake completed).
    public var established: Bool
    /// A client's connect failed (SYN_SENT → CLOSE): the socket's error, an
    /// errno (ECONNREFUSED, ETIMEDOUT, ECONNRESET, ...); -1 when it failed
    /// without one (closed by its process while connecting); 0: no failure.
    public var connectError: Int32
    /// SYN sent → ESTABLISHED, a client's only; 0: unknown.
    public var connectMicroseconds: UInt32
    /// ESTABLISHED → destroyed, known once closed; 0: unknown (not closed,
    /// or its establishment not seen).
    public var lifetimeMicroseconds: UInt64
    /// RSTs this socket sent (tcp:tcp_send_reset) and received (tcp:tcp_receive_reset).
    public var resetsSent: UInt32
    public var resetsReceived: UInt32

    public init(role: Role = .unknown, established: Bool = false, connectError: Int32 = 0,
                connectMicroseconds: UInt32 = 0, lifetimeMicroseconds: UInt64 = 0,
                resetsSent: UInt32 = 0, resetsReceived: UInt32 = 0) {
        self.role = role
        self.established = established
        self.connectError = connectError
        self.connectMicroseconds = connectMicroseconds
        self.lifetimeMicroseconds = lifetimeMicroseconds
        self.resetsSent = resetsSent
        self.resetsReceived = resetsReceived
    }

    /// A failed connect's reason as a label value: refused, timeout, reset,
    /// aborted (no error: its process closed it), or errno_N.
    public var failureReason: String? {
        switch connectError {
        case 0: nil
        case 111: "refused"  // ECONNREFUSED
        case 110: "timeout"  // ETIMEDOUT
        case 104: "reset"  // ECONNRESET
        case -1: "aborted"
        case 113: "host_unreachable"  // EHOSTUNREACH
        case 101: "network_unreachable"  // ENETUNREACH
        default: "errno_\(connectError)"
        }
    }
}

/// Counters the kernel side keeps for what it could not attribute to a
/// connection (its map was full), summed over CPUs.
public struct UnattributedCounters: Sendable, Equatable {
    public var sentBytes: UInt64 = 0
    public var receivedBytes: UInt64 = 0
    public var sendEvents: UInt64 = 0
    public var receiveEvents: UInt64 = 0
    /// Socket closes that could not be recorded (the "closed" map was full).
    public var closesNotRecorded: UInt64 = 0
    /// Retransmitted segments of sockets no process had moved bytes on yet
    /// (a SYN sent again), or whose owner could not be tracked.
    public var retransmittedSegments: UInt64 = 0
    public init() {}
}
