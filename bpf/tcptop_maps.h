/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* The layout of the BPF maps, shared by bpf/tcptop.bpf.c and the Swift side
 * (through Sources/CTCPTop): hence both licenses. Plain __u8..__u64 fields
 * with explicit padding only, so that both compilers agree on every offset. */
#ifndef TCPTOP_MAPS_H
#define TCPTOP_MAPS_H

#include <linux/types.h>

#define TCPTOP_COMM_LEN 16

/* One connection end as seen by one process. The socket cookie is unique for
 * the boot (unlike the struct sock pointer, which the kernel reuses). */
struct tcptop_conn_key {
	__u64 cookie;
	__u32 tgid;
	__u32 pad;
};

/* Counters first: the hot path only touches them. Everything after them is
 * written once, when the connection end is first seen. Addresses are in
 * network byte order (IPv4 in the first 4 bytes), ports in host order. */
struct tcptop_conn_value {
	__u64 sent_bytes;
	__u64 received_bytes;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u16 family; /* AF_INET or AF_INET6 */
	/* Fallback read paths: the owner's sends so far (mod 2^16); one in 16
	 * refreshes srtt_us (every receive does). In the counters' cache line. */
	__u16 rtt_sample_events;
	__u8 comm[TCPTOP_COMM_LEN];
	/* TCP health, on the socket's owner's value only (0 in "conns"):
	 * segments retransmitted (tcp:tcp_retransmit_skb), and the kernel's
	 * smoothed RTT in microseconds (tcp_sock.srtt_us / 8) as of the last
	 * read, send, receive or close, by read path. */
	__u64 retransmits;
	__u32 srtt_us;
	/* The connection's life (sock:inet_sock_set_state, the reset
	 * tracepoints), on the owner's value only. Times are bpf_ktime_get_ns. */
	__u32 connect_us; /* SYN sent -> established, a client's */
	__u64 opened_ns; /* SYN sent (client) */
	__u64 established_ns;
	__u64 lifetime_us; /* established -> closed, set at close */
	__s32 connect_error; /* SYN_SENT -> CLOSE: sk_err, or -1 without one */
	__u32 resets_sent;
	__u32 resets_received;
	__u8 role; /* enum tcptop_role */
	__u8 established; /* reached ESTABLISHED while traced */
	/* 1 from SYN sent until the port is known (established or failed):
	 * readers skip the end until then, so its labels are final. */
	__u8 connecting;
	__u8 pad3;
	/* Who, read with comm (when the end is first seen, or its pending
	 * owner claimed): the task's cgroup v2 id (the kernfs inode of its
	 * cgroup directory, resolved to a path by user space) and its uid in
	 * the initial user namespace. */
	__u64 cgroup_id;
	__u32 uid;
	__u32 pad4;
};

enum tcptop_role {
	TCPTOP_ROLE_UNKNOWN = 0,
	TCPTOP_ROLE_CLIENT = 1,
	TCPTOP_ROLE_SERVER = 2,
};

/* Socket-local storage: the first process that moves bytes on a socket
 * ("owner") is counted right here, found from the socket pointer without a
 * hash lookup. Other processes on the same socket go to the "conns" hash. */
struct tcptop_sock_value {
	struct tcptop_conn_value conn;
	__u64 cookie;
	__u32 owner_tgid;
	__u16 shared; /* another process used it too: its entries are in "conns" */
	/* Socket-hash read path: the socket is gone but "closed_conns" was
	 * full, so its final counts wait here until user space takes them. */
	__u16 closed;
	/* Storage-iterator read path: the counters as the iterator last handed
	 * them to user space. If the final counts cannot be recorded at close,
	 * the rest still counts, as unattributed bytes. */
	__u64 reported_sent_bytes;
	__u64 reported_received_bytes;
	__u64 reported_retransmits;
};

/* The name of a cgroup v2 directory (its path's last component). Longer
 * names are cut; a container scope's is 76-86 bytes. */
#define TCPTOP_CGROUP_NAME_LEN 128
struct tcptop_cgroup_name {
	char name[TCPTOP_CGROUP_NAME_LEN];
};

/* kprobe hooks: what the entry probe leaves for the return probe of the
 * same thread (key: pid_tgid). */
struct tcptop_call {
	__u64 sk;
	__u32 is_send;
	__u32 peek; /* MSG_PEEK: the return is not counted */
};

/* One connection end as the socket-storage iterator writes it to user space. */
struct tcptop_conn_record {
	struct tcptop_conn_key key;
	struct tcptop_conn_value value;
};

/* Indexes into the per-CPU "stats" array: what could not be attributed to a
 * connection (map full) is still counted here, never dropped. */
enum tcptop_stat {
	TCPTOP_STAT_UNATTRIBUTED_SENT_BYTES = 0,
	TCPTOP_STAT_UNATTRIBUTED_RECEIVED_BYTES = 1,
	TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS = 2,
	TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS = 3,
	TCPTOP_STAT_CLOSED_NOT_RECORDED = 4,
	/* Tracked sockets destroyed: user space reads the closed maps only
	 * when this moved, so an idle poll is one lookup. */
	TCPTOP_STAT_CLOSES = 5,
	/* kprobe hooks only: calls whose kretprobe never ran (more threads
	 * inside tcp_sendmsg/tcp_recvmsg at once than the kretprobe's
	 * maxactive instances, or the entry stash full), or whose kprobe
	 * never ran. Their bytes are unknown; each is also one unattributed
	 * event of its direction. */
	TCPTOP_STAT_MISSED_CALLS = 6,
	/* Segments retransmitted on sockets no process moved bytes on yet
	 * (a SYN sent again) or whose owner is not tracked (map full). */
	TCPTOP_STAT_UNATTRIBUTED_RETRANSMITS = 7,
	TCPTOP_STAT_COUNT = 8,
};

/* Load-time settings: the program's only read-only global, so it is the
 * whole .rodata section, set by user space before load. 0 = no filter. */
struct tcptop_settings {
	__u32 target_tgid;
	__u32 filter_cgroup; /* 1: only tasks under the cgroup in "cgroup_filter" */
	__u32 socket_capacity; /* sockets that may get their own storage */
	__u32 count_nothing; /* 1: return at once (the benchmark's cost floor) */
	__u32 read_path; /* enum tcptop_read_path */
	__u32 cpus; /* possible CPUs: numbers taken per CPU (take_number) */
};

/* Indexes into the per-CPU "per_cpu_counters" array. */
enum tcptop_counter {
	TCPTOP_COUNTER_CONNECTION_IDS = 0, /* socket_hash: ids in place of cookies */
	TCPTOP_COUNTER_COUNT = 1,
};

/* Where the owners' counters live and how user space reads them. */
enum tcptop_read_path {
	/* In socket storage, read by the socket-storage iterator. */
	TCPTOP_READ_STORAGE_ITERATOR = 0,
	/* In the "sk_owners" hash keyed by socket, read with batch lookups. */
	TCPTOP_READ_SOCKET_HASH = 1,
	/* In the "slots" array, found through socket storage, read by user
	 * space through a shared mapping of the array. */
	TCPTOP_READ_STORAGE_ARRAY = 2,
};

/* One entry of the "slots" array (read path storage_array). */
struct tcptop_slot {
	struct tcptop_conn_value conn;
	__u64 cookie;
	__u32 tgid;
	__u32 state; /* enum tcptop_slot_state, written last */
};

/* On "free_slots", a slot used before (freed by user space, or given back
 * by a program that lost a race): not counted in "slots_taken" again. */
#define TCPTOP_SLOT_REUSED (1U << 31)

enum tcptop_slot_state {
	TCPTOP_SLOT_FREE = 0, /* user space ignores it */
	TCPTOP_SLOT_LIVE = 1, /* a live socket's owner counts here */
	TCPTOP_SLOT_CLOSED = 2, /* final counts: user space takes them, frees the slot */
};

_Static_assert(sizeof(struct tcptop_settings) == 24, "settings layout");
_Static_assert(sizeof(struct tcptop_sock_value) == 184, "socket value layout");
_Static_assert(sizeof(struct tcptop_conn_record) == 160, "record layout");
_Static_assert(sizeof(struct tcptop_conn_key) == 16, "conn key layout");
_Static_assert(sizeof(struct tcptop_conn_value) == 144, "conn value layout");
_Static_assert(sizeof(struct tcptop_slot) == 160, "slot layout");

#endif
