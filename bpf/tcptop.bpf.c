// SPDX-License-Identifier: GPL-2.0
/* Counts TCP payload bytes per connection end and process: one object, its
 * parts one concern per file. User space (Sources/TCPTopBPF) chooses at start,
 * by trying, one set of hooks and one read path, and loads only their
 * programs (bpf_program__set_autoload):
 *
 *   counting.h              maps and the counting core every hook shares
 *   store_socket_storage.h  read path "storage_iterator": owners' counters in
 *                           socket-local storage, read by its iterator
 *   store_socket_hash.h     read path "socket_hash": owners' counters in a
 *                           hash keyed by socket, read with batch lookups
 *   store_storage_array.h   read path "storage_array": owners' counters in an
 *                           array found through socket storage, read by user
 *                           space through a shared mapping
 *   hooks_tracepoints.h     hooks "tp_btf" and "raw_tp" on sock_send_length /
 *                           sock_recv_length (Linux >= 6.3), and the close hook
 *   hooks_fexit.h           hooks "fexit" on tcp_sendmsg / tcp_recvmsg
 *   hooks_kprobe.h          hooks "kprobe" on the same functions
 *
 * The map layouts shared with Swift are in tcptop_maps.h. */
#include "kernel_types.h"
#include <asm/ptrace.h> /* struct pt_regs, the context of the kprobe programs */
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcptop_maps.h"

#include "counting.h"
#include "store_socket_storage.h"
#include "store_socket_hash.h"
#include "store_storage_array.h"

/* The hooks' way into the core. Typed hooks (tp_btf, fexit) get a socket
 * pointer the verifier knows, read directly and usable with socket storage;
 * the others (raw_tp, kprobe) read through CO-RE and use the socket hash.
 * settings.read_path is read-only at load, so the verifier sees one path. */
static __always_inline int count_typed(struct sock *sk, int ret, bool is_send)
{
	if (settings.count_nothing || ret <= 0 || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (filtered_out(pid_tgid))
		return 0;
	if (settings.read_path == TCPTOP_READ_SOCKET_HASH)
		return count_hash(sk, pid_tgid >> 32, ret, is_send, true);
	if (settings.read_path == TCPTOP_READ_STORAGE_ARRAY)
		return count_array(sk, pid_tgid >> 32, ret, is_send);
	return count_storage(sk, pid_tgid >> 32, ret, is_send);
}

static __always_inline int count_untyped(struct sock *sk, int ret, bool is_send)
{
	if (settings.count_nothing || ret <= 0 || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (filtered_out(pid_tgid))
		return 0;
	return count_hash(sk, pid_tgid >> 32, ret, is_send, false);
}

static __always_inline void close_typed(struct sock *sk)
{
	if (settings.read_path == TCPTOP_READ_SOCKET_HASH)
		close_hash(sk, true);
	else if (settings.read_path == TCPTOP_READ_STORAGE_ARRAY)
		close_array(sk);
	else
		close_storage(sk);
}

/* The owner's value of a socket on the plan's read path (untyped hooks: the
 * socket hash); `make`: made for `tgid` if missing (0: a pending owner). */
static __always_inline struct tcptop_conn_value *owner_of(struct sock *sk, bool typed, bool make, __u32 tgid)
{
	if (!typed || settings.read_path == TCPTOP_READ_SOCKET_HASH)
		return owner_hash(sk, make, tgid);
	if (settings.read_path == TCPTOP_READ_STORAGE_ARRAY)
		return owner_array(sk, make, tgid);
	return owner_storage(sk, make, tgid);
}

/* A retransmit (tcp:tcp_retransmit_skb, softirq or timer context: no
 * process to filter by): the socket's own count (total_retrans) on its owner's
 * value, a pending owner if no process moved bytes on it yet; an untracked
 * socket's segments, if this transmit went out (`sent`), to the
 * unattributed count. */
static __always_inline void retransmitted(struct sock *sk, struct sk_buff *skb, bool sent, bool typed)
{
	if (settings.count_nothing)
		return;
	struct tcptop_conn_value *conn = owner_of(sk, typed, true, 0);
	if (conn) {
		take_retransmits(conn, typed ? total_retrans_typed(sk) : total_retrans_untyped(sk));
		note_port(conn, sk); /* a SYN sent again: connect() bound the port */
	} else if (sent) {
		add_stat(TCPTOP_STAT_UNATTRIBUTED_RETRANSMITS, retransmitted_segments(skb));
	}
}

#include "hooks_tracepoints.h"
#include "hooks_health.h"
#include "hooks_lifecycle.h"
#include "hooks_fexit.h"
#include "hooks_kprobe.h"

char LICENSE[] SEC("license") = "GPL";
