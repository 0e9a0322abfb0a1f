/* Hooks "kprobe": kprobe/kretprobe pairs on tcp_sendmsg, tcp_recvmsg (and
 * tcp_sendpage), the last resort for kernels with BTF but without BPF
 * trampolines (fexit refused). kprobe programs have no typed socket, so they
 * count in the socket hash. The entry probe stashes the socket (and whether
 * the call is a MSG_PEEK receive) per thread in "calls"; the return probe of
 * the same thread takes it and counts the return value, the bytes really
 * moved. A call whose return probe never runs (the kretprobe has only
 * maxactive instances; libbpf 1.1 cannot raise the kernel's default,
 * max(10, 2 x CPUs)) is found at that thread's next call, or when the thread
 * exits: it is counted in TCPTOP_STAT_MISSED_CALLS and as an unattributed
 * event, its bytes are unknown. */
#ifndef TCPTOP_HOOKS_KPROBE_H
#define TCPTOP_HOOKS_KPROBE_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* threads inside the hooked functions at once (1 with other hooks) */
	__type(key, __u64);
	__type(value, struct tcptop_call);
} calls SEC(".maps");

static __always_inline void missed_call(bool is_send)
{
	add_stat(TCPTOP_STAT_MISSED_CALLS, 1);
	add_stat(is_send ? TCPTOP_STAT_UNATTRIBUTED_SEND_EVENTS : TCPTOP_STAT_UNATTRIBUTED_RECEIVE_EVENTS, 1);
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
	return count_hash(sk, pid_tgid >> 32, ret, is_send, false);
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
static __always_inline void thread_exit(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcptop_call *stale = bpf_map_lookup_elem(&calls, &pid_tgid);
	if (!stale)
		return;
	if (!stale->peek)
		missed_call(stale->is_send);
	bpf_map_delete_elem(&calls, &pid_tgid);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tcptop_thread_exit, struct task_struct *task)
{
	thread_exit();
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(tcptop_raw_thread_exit, struct task_struct *task)
{
	thread_exit();
	return 0;
}

#endif
