/* The layout of the BPF maps, shared by bpf/tcptop.bpf.c and the Swift side
 * (through Sources/CTCPTop). Plain __u8..__u64 fields with explicit padding
 * only, so that both compilers agree on every offset. */
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
	__u16 pad;
	__u8 comm[TCPTOP_COMM_LEN];
};

/* Indexes into the per-CPU "stats" array: what could not be attributed to a
 * connection (map full) is still counted here, never dropped. */
enum tcptop_stat {
	TCPTOP_STAT_UNATTRIBUTED_SENT_BYTES = 0,
	TCPTOP_STAT_UNATTRIBUTED_RECEIVED_BYTES = 1,
	TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS = 2,
	TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS = 3,
	TCPTOP_STAT_CLOSED_NOT_RECORDED = 4,
	TCPTOP_STAT_COUNT = 5,
};

/* Load-time settings: the program's only read-only global, so it is the
 * whole .rodata section, set by user space before load. 0 = no filter. */
struct tcptop_settings {
	__u32 target_tgid;
	__u32 filter_cgroup; /* 1: only tasks under the cgroup in "cgroup_filter" */
};

_Static_assert(sizeof(struct tcptop_settings) == 8, "settings layout");
_Static_assert(sizeof(struct tcptop_conn_key) == 16, "conn key layout");
_Static_assert(sizeof(struct tcptop_conn_value) == 72, "conn value layout");

#endif
