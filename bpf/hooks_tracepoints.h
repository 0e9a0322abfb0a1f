/* Hooks "tp_btf" and "raw_tp": the sock:sock_send_length and
 * sock:sock_recv_length tracepoints (Linux >= 6.3). They fire once per
 * sendmsg/recvmsg call on any socket with the call's return value, so
 * summing the positive returns of TCP sockets gives exact payload bytes,
 * loopback and kernel TLS included. tp_btf gets the arguments as typed
 * pointers, read directly: about 2x cheaper than a classic tracepoint
 * (DESIGN.md). raw_tp is the same tracepoint for a kernel that refuses
 * tp_btf; its socket is a plain number, so it counts in the socket hash.
 * tcp:tcp_destroy_sock (>= 4.15) ends a connection for every hook kind: as
 * tp_btf where allowed, else as raw_tp. */
#ifndef TCPTOP_HOOKS_TRACEPOINTS_H
#define TCPTOP_HOOKS_TRACEPOINTS_H

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcptop_send, struct sock *sk, int ret, int flags)
{
	return count_typed(sk, ret, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tcptop_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK) /* peeked bytes are received again later */
		return 0;
	return count_typed(sk, ret, false);
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(tcptop_raw_send, struct sock *sk, int ret, int flags)
{
	return count_untyped(sk, ret, true);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(tcptop_raw_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0;
	return count_untyped(sk, ret, false);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcptop_destroy, struct sock *sk)
{
	close_typed(sk);
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(tcptop_raw_destroy, struct sock *sk)
{
	close_hash(sk, false);
	return 0;
}

#endif
