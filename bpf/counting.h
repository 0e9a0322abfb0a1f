/* The counting core: what every hook and both read paths share. A hook
 * filters (TCP, bytes moved, pid and cgroup filters) and calls count() with
 * the socket, the calling process and the call's return value. */
#ifndef TCPTOP_COUNTING_H
#define TCPTOP_COUNTING_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define EEXIST 17

const volatile struct tcptop_settings settings = {};

/* Connection ends of processes that share a socket with its owner (the
 * first process that moved bytes on it; fork after accept). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by user space before load */
	__type(key, struct tcptop_conn_key);
	__type(value, struct tcptop_conn_value);
} conns SEC(".maps");

/* Cookies of destroyed shared sockets: their "conns" entries are final.
 * This and "closed_conns" fill between two reads of user space; they are
 * sized for bursts of closes (4x the capacity) and allocate on demand. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* resized by user space before load */
	__type(key, __u64);
	__type(value, __u8);
} closed SEC(".maps");

/* The owner's final counts of destroyed sockets, until user space takes them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* resized by user space before load */
	__type(key, struct tcptop_conn_key);
	__type(value, struct tcptop_conn_value);
} closed_conns SEC(".maps");

/* The cgroup v2 directory of tcptop -c, when settings.filter_cgroup is set. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPTOP_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Numbers unique for the loaded program without an atomic fetch-and-add:
 * its result needs BPF_FETCH (Linux >= 5.12), and the object is built for
 * BPF CPU v2 (Plugins/BPFCompiler) so that 5.10 loads it. The n-th number
 * taken on CPU c is n * cpus + c. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPTOP_COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} per_cpu_counters SEC(".maps");

/* A program can run nested on the same CPU (a softirq's retransmit hook
 * interrupting a send) and take a number between a read and a write of
 * the count: so the count is added to atomically and read before and
 * after, and the number kept only if nothing came between (else again).
 * False: taken away four times over. */
static __always_inline bool take_number(__u32 counter, __u64 *number)
{
	volatile __u64 *taken = bpf_map_lookup_elem(&per_cpu_counters, &counter);
	if (!taken)
		return false;
	for (int attempt = 0; attempt < 4; attempt++) {
		__u64 before = *taken;
		__sync_fetch_and_add(taken, 1);
		if (*taken == before + 1) {
			*number = before * settings.cpus + bpf_get_smp_processor_id();
			return true;
		}
	}
	return false;
}

static __always_inline void add_stat(__u32 index, __u64 amount)
{
	__u64 *slot = bpf_map_lookup_elem(&stats, &index);
	if (slot)
		*slot += amount; /* per-CPU: no other writer */
}

static __always_inline int unattributed(int ret, bool is_send)
{
	if (ret <= 0) /* a pending entry the retransmit hook tried to make: no call to count */
		return 0;
	add_stat(is_send ? TCPTOP_STAT_UNATTRIBUTED_SENT_BYTES : TCPTOP_STAT_UNATTRIBUTED_RECEIVED_BYTES, ret);
	add_stat(is_send ? TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS : TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS, 1);
	return 0;
}

static __always_inline void add_bytes(struct tcptop_conn_value *value, int ret, bool is_send)
{
	if (is_send)
		__sync_fetch_and_add(&value->sent_bytes, ret);
	else
		__sync_fetch_and_add(&value->received_bytes, ret);
}

/* The socket's smoothed RTT in microseconds (0: no sample yet). Typed
 * hooks reach the tcp_sock through a helper, the others read with CO-RE. */
static __always_inline __u32 srtt_typed(struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	return tp ? tp->srtt_us >> 3 : 0;
}

static __always_inline __u32 srtt_untyped(struct sock *sk)
{
	return BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
}

/* The segments of a retransmitted skb: tcp_skb_pcount(), what the kernel
 * adds to the socket's total_retrans (tcpi_total_retrans). */
static __always_inline __u32 retransmitted_segments(struct sk_buff *skb)
{
	__u16 segs = BPF_CORE_READ((struct tcp_skb_cb *)&skb->cb, tcp_gso_segs);
	return segs ? segs : 1;
}

/* On the read paths without an iterator, the hot path keeps srtt_us fresh:
 * at every receive (an exchange ends with one: its ACKs are in by then) and
 * at one in 16 sends, so that the read of the socket (a helper call, or a
 * probe read) is not paid on every send of a bulk transfer. */
static __always_inline bool rtt_sample_due(struct tcptop_conn_value *value, bool is_send)
{
	return !is_send || (++value->rtt_sample_events & 15) == 1;
}

/* connect() binds the local port after SYN_SENT, and a failed connect
 * releases it before its CLOSE is traced: it is taken from the events in
 * between (the RST that refuses it, a SYN sent again) and at ESTABLISHED. */
static __always_inline void note_port(struct tcptop_conn_value *conn, struct sock *sk)
{
	if (!conn->connecting)
		return;
	__u16 port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (port)
		conn->lport = port;
}

/* The socket's own count of retransmitted segments (tcp_sock.total_retrans,
 * since the connection began): the kernel adds to it before transmitting,
 * so a retransmit whose transmit then fails (a full device queue) counts
 * too, and a read at every tracepoint and at close is exact where a sum of
 * the tracepoint's skbs is not. A plain store: a socket retransmits under
 * its lock. */
static __always_inline __u32 total_retrans_typed(struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	return tp ? tp->total_retrans : 0;
}

static __always_inline __u32 total_retrans_untyped(struct sock *sk)
{
	return BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
}

static __always_inline void take_retransmits(struct tcptop_conn_value *value, __u32 total)
{
	if (total > value->retransmits)
		value->retransmits = total;
}

/* Whether this call is counted at all: the load-time filters. */
static __always_inline bool filtered_out(__u64 pid_tgid)
{
	if (settings.target_tgid && (pid_tgid >> 32) != settings.target_tgid)
		return true;
	return settings.filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1;
}

/* The directory name of each cgroup an end was first seen in, by cgroup
 * id: user space resolves ids through the cgroup tree, which no longer has
 * a short-lived unit's cgroup when it looks (a job of 0.3 s); the name
 * still tells its unit or container. Written once per cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct tcptop_cgroup_name);
} cgroup_names SEC(".maps");

/* Room for a name off the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcptop_cgroup_name);
} cgroup_name_scratch SEC(".maps");

static __always_inline void note_cgroup_name(__u64 id)
{
	__u32 zero = 0;

	if (bpf_map_lookup_elem(&cgroup_names, &id))
		return;
	struct tcptop_cgroup_name *scratch = bpf_map_lookup_elem(&cgroup_name_scratch, &zero);
	if (!scratch)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const char *name = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, name);
	if (bpf_probe_read_kernel_str(scratch->name, sizeof(scratch->name), name) < 0)
		return;
	bpf_map_update_elem(&cgroup_names, &id, scratch, BPF_NOEXIST);
}

/* The calling task's comm, cgroup and uid: who moves the bytes. */
static __always_inline void read_owner(struct tcptop_conn_value *value)
{
	bpf_get_current_comm(&value->comm, sizeof(value->comm));
	value->cgroup_id = bpf_get_current_cgroup_id();
	value->uid = (__u32)bpf_get_current_uid_gid();
	note_cgroup_name(value->cgroup_id);
}

/* Addresses, ports and the calling task's comm, cgroup and uid, read once
 * per connection end. BPF_CORE_READ, so that hooks whose arguments are not typed pointers
 * (raw_tp, kprobe) can share it. */
static __always_inline void read_connection(struct sock *sk, struct tcptop_conn_value *value)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		__u32 laddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 raddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		/* Exactly 4 bytes: a wider copy would drag neighbouring fields
		 * (such as the TCP state) into the value. */
		__builtin_memcpy(value->laddr, &laddr, 4);
		__builtin_memcpy(value->raddr, &raddr, 4);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&value->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&value->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	value->family = family;
	value->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	value->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	read_owner(value);
}

/* Owner entries tracked now, on every read path (the storage path's bound
 * on sockets). Entries made before any byte moved (a connect's, a server's
 * handshake's, a retransmit's pending owner) may take only half of the
 * capacity, so that idle connections, a flood of them, never crowd out the
 * sockets whose bytes are counted; pending owners none under a pid or
 * cgroup filter, which cannot tell whose socket it is. A soft bound: CPUs
 * making entries at the same instant may pass it together. */
__s64 tracked_entries = 0;

static __always_inline void tracked_changed(__s64 by)
{
	__sync_fetch_and_add(&tracked_entries, by); /* a sub would need BPF_FETCH in CPU v2 */
}

static __always_inline bool early_entry_allowed(__u32 tgid)
{
	if (!tgid && (settings.target_tgid || settings.filter_cgroup))
		return false;
	return tracked_entries < settings.socket_capacity / 2;
}

/* Pending owners: a retransmit can come before the first send returns (a
 * large first send blocks while its segments are lost and sent again), or
 * on a socket no process moved bytes on yet. The retransmit hook then makes
 * the socket's owner entry with tgid 0 (pending: user space skips it, and
 * at close its retransmits count as unattributed); the first process that
 * moves bytes on it becomes its owner here. */
static __always_inline void claim(struct tcptop_conn_value *value, __u32 *owner_tgid, __u32 tgid, int ret,
				  bool is_send)
{
	*owner_tgid = tgid;
	read_owner(value);
	add_bytes(value, ret, is_send);
}

/* A process that is not the socket's owner: its own entry in "conns",
 * keyed by the owner's cookie; "shared" is the owner's flag that says so. */
static __always_inline int count_shared(struct sock *sk, __u64 cookie, __u16 *shared, __u32 tgid, int ret,
					bool is_send)
{
	*shared = 1;
	struct tcptop_conn_key key = { .cookie = cookie, .tgid = tgid };
	struct tcptop_conn_value *existing = bpf_map_lookup_elem(&conns, &key);
	if (existing) {
		add_bytes(existing, ret, is_send);
		return 0;
	}
	struct tcptop_conn_value value = {};
	read_connection(sk, &value);
	if (is_send)
		value.sent_bytes = ret;
	else
		value.received_bytes = ret;
	long err = bpf_map_update_elem(&conns, &key, &value, BPF_NOEXIST);
	if (err == 0)
		return 0;
	if (err == -EEXIST) { /* another CPU inserted it first */
		existing = bpf_map_lookup_elem(&conns, &key);
		if (existing) {
			add_bytes(existing, ret, is_send);
			return 0;
		}
	}
	return unattributed(ret, is_send); /* "conns" is full */
}

/* A shared socket is destroyed: its "conns" entries are final. */
static __always_inline void mark_shared_final(__u64 cookie)
{
	__u8 one = 1;
	if (bpf_map_update_elem(&closed, &cookie, &one, BPF_ANY))
		add_stat(TCPTOP_STAT_CLOSED_NOT_RECORDED, 1);
}

/* A tracked socket is being destroyed: hand the owner's final counts to
 * "closed_conns" and mark the shared entries final. Returns false when
 * "closed_conns" is full; each read path decides what then happens. */
static __always_inline bool hand_over(struct tcptop_sock_value *owned)
{
	add_stat(TCPTOP_STAT_CLOSES, 1);
	struct tcptop_conn_key key = { .cookie = owned->cookie, .tgid = owned->owner_tgid };
	struct tcptop_conn_value final = owned->conn;
	bool recorded = bpf_map_update_elem(&closed_conns, &key, &final, BPF_NOEXIST) == 0;
	if (owned->shared)
		mark_shared_final(key.cookie);
	return recorded;
}

#endif
