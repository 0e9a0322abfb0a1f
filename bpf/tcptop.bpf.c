// SPDX-License-Identifier: GPL-2.0
/* Counts TCP payload bytes per connection end and process.
 *
 * Hooks: the sock:sock_send_length / sock:sock_recv_length tracepoints
 * (Linux >= 6.3). They fire once per sendmsg/recvmsg call on any socket with
 * the call's return value, so summing the positive returns of TCP sockets
 * gives exact payload bytes, loopback included. Attached as tp_btf: the
 * arguments arrive as typed pointers that can be read directly, which
 * measured about 2x cheaper than a classic tracepoint (DESIGN.md). Older
 * kernels get fexit programs on tcp_sendmsg / tcp_recvmsg instead (further
 * down), feeding the same count().
 *
 * Hot path: the counters of the process that owns a socket live in the
 * socket's own BPF storage, found from the socket pointer (no key to build,
 * no hash to compute): one storage lookup, one tgid compare, one atomic add.
 * Measured here: ~20 ns above an empty program, against ~90 ns for a hash
 * map keyed by socket cookie and tgid. Addresses, ports and comm are read
 * once, when the socket is first seen. A second process on the same socket
 * (fork after accept) is counted in the "conns" hash instead.
 *
 * User space reads live sockets through a socket-storage iterator, and the
 * final counts of destroyed sockets from "closed_conns". */
#include "kernel_types.h"
#include <asm/ptrace.h> /* struct pt_regs, the context of the kprobe programs */
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcptop_maps.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define EEXIST 17

const volatile struct tcptop_settings settings = {};

/* Sockets that own a storage now; kept below settings.socket_capacity. */
__u64 live_sockets = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcptop_sock_value);
} sockets SEC(".maps");

/* Connection ends of processes that share a socket with its owner. */
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

static __always_inline void add_stat(__u32 index, __u64 amount)
{
	__u64 *slot = bpf_map_lookup_elem(&stats, &index);
	if (slot)
		*slot += amount; /* per-CPU: no other writer */
}

static __always_inline int unattributed(int ret, bool is_send)
{
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

/* Addresses, ports and the calling thread's comm. BPF_CORE_READ, so that
 * hooks whose arguments are not typed pointers can share it. */
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
	bpf_get_current_comm(&value->comm, sizeof(value->comm));
}

/* A process that is not the socket's owner: its own entry in "conns". */
static __always_inline int count_shared(struct sock *sk, struct tcptop_sock_value *owned, __u32 tgid,
					int ret, bool is_send)
{
	owned->shared = 1;
	struct tcptop_conn_key key = { .cookie = owned->cookie, .tgid = tgid };
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

/* Cold path: a socket without storage yet, or used by a second process. */
static __noinline int count_slow(struct sock *sk, struct tcptop_sock_value *owned, __u32 tgid, int ret,
				 bool is_send)
{
	if (!owned) {
		if (__sync_fetch_and_add(&live_sockets, 1) >= settings.socket_capacity) {
			__sync_fetch_and_sub(&live_sockets, 1);
			return unattributed(ret, is_send);
		}
		struct tcptop_sock_value initial = {};
		read_connection(sk, &initial.conn);
		initial.cookie = bpf_get_socket_cookie(sk);
		initial.owner_tgid = tgid;
		owned = bpf_sk_storage_get(&sockets, sk, &initial, BPF_SK_STORAGE_GET_F_CREATE);
		if (!owned) {
			/* Another CPU created it first, or no memory. */
			__sync_fetch_and_sub(&live_sockets, 1);
			owned = bpf_sk_storage_get(&sockets, sk, 0, 0);
			if (!owned)
				return unattributed(ret, is_send);
		}
		if (owned->owner_tgid == tgid) {
			add_bytes(&owned->conn, ret, is_send);
			return 0;
		}
	}
	return count_shared(sk, owned, tgid, ret, is_send);
}

static __always_inline int count(struct sock *sk, int ret, bool is_send)
{
	if (settings.count_nothing || ret <= 0 || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (settings.target_tgid && tgid != settings.target_tgid)
		return 0;
	if (settings.filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return 0;
	struct tcptop_sock_value *owned = bpf_sk_storage_get(&sockets, sk, 0, 0);
	if (owned && owned->owner_tgid == tgid) {
		add_bytes(&owned->conn, ret, is_send);
		return 0;
	}
	return count_slow(sk, owned, tgid, ret, is_send);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcptop_send, struct sock *sk, int ret, int flags)
{
	return count(sk, ret, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tcptop_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK) /* peeked bytes are received again later */
		return 0;
	return count(sk, ret, false);
}

/* Fallback hooks for kernels without the sock_*_length tracepoints (before
 * 6.3: RHEL 9, Ubuntu 22.04, Debian 12). User space loads either the two
 * tp_btf programs above or these (bpf_program__set_autoload), never both.
 * fexit sees the function's return value: the bytes really sent or copied,
 * not the size asked for. fexit programs are tracing programs like tp_btf,
 * so count() and its socket storage work unchanged. tcp_sendmsg and
 * tcp_recvmsg are what the socket layer calls (through sk_prot) for every
 * send/recv/read/write on a TCP socket, IPv4 and IPv6, so they see the same
 * calls as the tracepoints. Not seen here but seen by the tracepoints:
 * kernel TLS sockets, whose sk_prot is TLS's own.
 * Debian 12's stock tcptop tools count receives at tcp_cleanup_rbuf instead,
 * which also counts MSG_PEEK reads (measured, README); libbpf-tools' also
 * counts sends by the size asked for, not the size taken. */
SEC("fexit/tcp_sendmsg")
int BPF_PROG(tcptop_fexit_send, struct sock *sk, void *msg, __u64 size, int ret)
{
	return count(sk, ret, true);
}

/* sendfile() and splice() into a TCP socket go through tcp_sendpage, not
 * tcp_sendmsg, until Linux 6.5 (which removed it); loaded only where the
 * function exists. */
SEC("fexit/tcp_sendpage")
int BPF_PROG(tcptop_fexit_sendpage, struct sock *sk, void *page, int offset, __u64 size, int flags, int ret)
{
	return count(sk, ret, true);
}

/* tcp_recvmsg's arguments changed twice, so there is one program per
 * signature (all on the same function); user space loads the one whose
 * argument count matches the running kernel's BTF.
 * Recent kernels (6.18 here; addr_len dropped): tcp_recvmsg(sk, msg, len, flags). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv4, struct sock *sk, void *msg, __u64 len, int flags, int ret)
{
	if (flags & MSG_PEEK) /* peeked bytes are received again later */
		return 0;
	return count(sk, ret, false);
}

/* 5.19 and later (Debian 12's 6.1): tcp_recvmsg(sk, msg, len, flags, addr_len). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv5, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len, int ret)
{
	if (flags & MSG_PEEK)
		return 0;
	return count(sk, ret, false);
}

/* Before 5.19: tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv6, struct sock *sk, void *msg, __u64 len, int nonblock, int flags, int *addr_len,
	     int ret)
{
	if (flags & MSG_PEEK)
		return 0;
	return count(sk, ret, false);
}

/* A tracked socket is being destroyed: hand the owner's final counts to
 * user space, and mark the shared entries final. */
static __always_inline void hand_over(struct tcptop_sock_value *owned)
{
	add_stat(TCPTOP_STAT_CLOSES, 1);
	struct tcptop_conn_key key = { .cookie = owned->cookie, .tgid = owned->owner_tgid };
	struct tcptop_conn_value final = owned->conn;
	if (bpf_map_update_elem(&closed_conns, &key, &final, BPF_NOEXIST)) {
		/* "closed_conns" is full: user space keeps what it was last
		 * handed, and the bytes since then count as unattributed. */
		add_stat(TCPTOP_STAT_CLOSED_NOT_RECORDED, 1);
		add_stat(TCPTOP_STAT_UNATTRIBUTED_SENT_BYTES, final.sent_bytes - owned->reported_sent_bytes);
		add_stat(TCPTOP_STAT_UNATTRIBUTED_RECEIVED_BYTES, final.received_bytes - owned->reported_received_bytes);
	}
	if (owned->shared) {
		__u8 one = 1;
		if (bpf_map_update_elem(&closed, &key.cookie, &one, BPF_ANY))
			add_stat(TCPTOP_STAT_CLOSED_NOT_RECORDED, 1);
	}
}

/* The socket is going away with its storage. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcptop_destroy, struct sock *sk)
{
	struct tcptop_sock_value *owned = bpf_sk_storage_get(&sockets, sk, 0, 0);
	if (!owned)
		return 0;
	__sync_fetch_and_sub(&live_sockets, 1);
	hand_over(owned);
	return 0;
}

/* Last-resort fallback: kprobe/kretprobe pairs on the same functions, for
 * kernels with BTF but without BPF trampolines (fexit refused). kprobe
 * programs cannot use socket storage nor the socket cookie, so this mode
 * keeps its own maps:
 *   - "calls": the entry probe stashes the socket (and whether the call is a
 *     MSG_PEEK receive) per thread; the return probe of the same thread
 *     takes it and counts the return value, the bytes really moved.
 *   - "sk_owners": the owner's counters by struct sock address, in the same
 *     struct as the socket storage. Its "cookie" is a number from
 *     next_connection_id instead (unique for the loaded program, so a reused
 *     socket address is a new connection end). Other processes on the socket
 *     go to "conns" as in the other modes (count_shared).
 *   - at tcp_destroy_sock (a tp_btf program: BTF only, no trampoline) the
 *     owner's entry moves to "closed_conns" and is deleted, and the shared
 *     entries are marked final in "closed", as tcptop_destroy does.
 *   - user space reads "sk_owners" through a map-element iterator
 *     (tcptop_kprobe_dump) in place of the socket-storage iterator.
 * A call whose return probe never runs (the kretprobe has only maxactive
 * instances; libbpf 1.1 cannot raise the kernel's default, max(10, 2 x
 * CPUs)) is found at that thread's next call, or when the thread exits: it
 * is counted in TCPTOP_STAT_MISSED_CALLS and as an unattributed event, its
 * bytes are unknown. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by user space before load (1 in other modes) */
	__type(key, __u64);
	__type(value, struct tcptop_sock_value);
} sk_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* threads inside the hooked functions at once (1 in other modes) */
	__type(key, __u64);
	__type(value, struct tcptop_call);
} calls SEC(".maps");

/* The connection ids of kprobe mode; 0 is never handed out. */
__u64 next_connection_id = 0;

static __always_inline void missed_call(bool is_send)
{
	add_stat(TCPTOP_STAT_MISSED_CALLS, 1);
	add_stat(is_send ? TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS : TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS, 1);
}

static __noinline int count_kprobe(struct sock *sk, __u32 tgid, int ret, bool is_send)
{
	__u64 key = (__u64)sk;
	struct tcptop_sock_value *owned = bpf_map_lookup_elem(&sk_owners, &key);
	if (owned && owned->owner_tgid == tgid) {
		add_bytes(&owned->conn, ret, is_send);
		return 0;
	}
	if (!owned) {
		struct tcptop_sock_value initial = {};
		read_connection(sk, &initial.conn);
		initial.cookie = __sync_fetch_and_add(&next_connection_id, 1) + 1;
		initial.owner_tgid = tgid;
		if (is_send)
			initial.conn.sent_bytes = ret;
		else
			initial.conn.received_bytes = ret;
		long err = bpf_map_update_elem(&sk_owners, &key, &initial, BPF_NOEXIST);
		if (err == 0)
			return 0;
		if (err != -EEXIST) /* "sk_owners" is full */
			return unattributed(ret, is_send);
		owned = bpf_map_lookup_elem(&sk_owners, &key); /* another CPU inserted it first */
		if (!owned)
			return unattributed(ret, is_send);
		if (owned->owner_tgid == tgid) {
			add_bytes(&owned->conn, ret, is_send);
			return 0;
		}
	}
	return count_shared(sk, owned, tgid, ret, is_send);
}

static __always_inline bool filtered_out(__u64 pid_tgid)
{
	if (settings.target_tgid && (pid_tgid >> 32) != settings.target_tgid)
		return true;
	return settings.filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1;
}

static __always_inline int enter(struct sock *sk, bool is_send, bool peek)
{
	if (settings.count_nothing)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (filtered_out(pid_tgid))
		return 0;
	struct tcptop_call call = { .sk = (__u64)sk, .is_send = is_send, .peek = peek };
	if (bpf_map_update_elem(&calls, &pid_tgid, &call, BPF_NOEXIST) == 0)
		return 0;
	struct tcptop_call *stale = bpf_map_lookup_elem(&calls, &pid_tgid);
	if (stale) { /* this thread's previous call never returned here */
		if (!stale->peek)
			missed_call(stale->is_send);
		*stale = call;
	} else { /* "calls" is full: this call's return cannot be matched */
		missed_call(is_send);
	}
	return 0;
}

static __always_inline int leave(int ret, bool is_send)
{
	if (settings.count_nothing)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcptop_call *stashed = bpf_map_lookup_elem(&calls, &pid_tgid);
	if (!stashed) {
		/* Filtered at entry, or the entry probe did not run: the bytes
		 * are known, the socket is not. */
		if (ret <= 0 || filtered_out(pid_tgid))
			return 0;
		return unattributed(ret, is_send);
	}
	struct tcptop_call call = *stashed;
	bpf_map_delete_elem(&calls, &pid_tgid);
	if (call.is_send != is_send) { /* a stale entry of the other direction */
		if (!call.peek)
			missed_call(call.is_send);
		return ret > 0 ? unattributed(ret, is_send) : 0;
	}
	if (call.peek || ret <= 0) /* peeked bytes are received again later */
		return 0;
	struct sock *sk = (struct sock *)call.sk;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return count_kprobe(sk, pid_tgid >> 32, ret, is_send);
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(tcptop_kprobe_send, struct sock *sk)
{
	return enter(sk, true, false);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(tcptop_kretprobe_send, int ret)
{
	return leave(ret, true);
}

/* Before Linux 6.5 (sendfile, splice); loaded only where it exists. */
SEC("kprobe/tcp_sendpage")
int BPF_KPROBE(tcptop_kprobe_sendpage, struct sock *sk)
{
	return enter(sk, true, false);
}

SEC("kretprobe/tcp_sendpage")
int BPF_KRETPROBE(tcptop_kretprobe_sendpage, int ret)
{
	return leave(ret, true);
}

/* flags is the 4th argument of tcp_recvmsg from 5.19 on (4 and 5 arguments). */
SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(tcptop_kprobe_recv, struct sock *sk, void *msg, __u64 len, int flags)
{
	return enter(sk, false, flags & MSG_PEEK);
}

/* Before 5.19: tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len). */
SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(tcptop_kprobe_recv6, struct sock *sk, void *msg, __u64 len, int nonblock, int flags)
{
	return enter(sk, false, flags & MSG_PEEK);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(tcptop_kretprobe_recv, int ret)
{
	return leave(ret, false);
}

/* A thread that ends with a stashed call: that call's return probe never
 * ran (a thread killed inside a call returns from it before exiting). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(tcptop_kprobe_exit, struct task_struct *task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcptop_call *stale = bpf_map_lookup_elem(&calls, &pid_tgid);
	if (!stale)
		return 0;
	if (!stale->peek)
		missed_call(stale->is_send);
	bpf_map_delete_elem(&calls, &pid_tgid);
	return 0;
}

/* tcptop_destroy for kprobe mode. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcptop_kprobe_destroy, struct sock *sk)
{
	__u64 sk_key = (__u64)sk;
	struct tcptop_sock_value *owned = bpf_map_lookup_elem(&sk_owners, &sk_key);
	if (!owned)
		return 0;
	hand_over(owned);
	/* The address may be reused by the next socket: a new entry, new id. */
	bpf_map_delete_elem(&sk_owners, &sk_key);
	return 0;
}

/* One iterator record. Each counter is copied with one 8-byte load, so a
 * read never sees a half-updated value; what was handed over is noted for
 * hand_over(). */
static __always_inline void write_record(struct seq_file *seq, struct tcptop_sock_value *owned)
{
	struct tcptop_conn_record record = {};
	record.key.cookie = owned->cookie;
	record.key.tgid = owned->owner_tgid;
	record.value = owned->conn;
	bpf_seq_write(seq, &record, sizeof(record));
	owned->reported_sent_bytes = record.value.sent_bytes;
	owned->reported_received_bytes = record.value.received_bytes;
}

/* tcptop_dump for kprobe mode: one record per "sk_owners" entry. */
SEC("iter/bpf_map_elem")
int tcptop_kprobe_dump(struct bpf_iter__bpf_map_elem *ctx)
{
	struct tcptop_sock_value *owned = ctx->value;
	if (!ctx->key || !owned)
		return 0;
	write_record(ctx->meta->seq, owned);
	return 0;
}

/* Writes one record per live socket; user space runs it at every read. */
SEC("iter/bpf_sk_storage_map")
int tcptop_dump(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct tcptop_sock_value *owned = ctx->value;
	if (!ctx->sk || !owned)
		return 0;
	write_record(ctx->meta->seq, owned);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
