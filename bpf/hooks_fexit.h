/* Hooks "fexit": for kernels without the sock_*_length tracepoints (before
 * 6.3: RHEL 9, Ubuntu 22.04, Debian 12). fexit sees the function's return
 * value: the bytes really sent or copied, not the size asked for. fexit
 * programs are typed tracing programs like tp_btf, so both read paths work.
 * tcp_sendmsg and tcp_recvmsg are what the socket layer calls (through
 * sk_prot) for every send/recv/read/write on a TCP socket, IPv4 and IPv6.
 * Not seen here but seen by the tracepoints: kernel TLS sockets, whose
 * sk_prot is TLS's own. Debian 12's stock tcptop tools count receives at
 * tcp_cleanup_rbuf instead, which also counts MSG_PEEK reads (measured,
 * README); libbpf-tools' also counts sends by the size asked for. */
#ifndef TCPTOP_HOOKS_FEXIT_H
#define TCPTOP_HOOKS_FEXIT_H

SEC("fexit/tcp_sendmsg")
int BPF_PROG(tcptop_fexit_send, struct sock *sk, void *msg, __u64 size, int ret)
{
	return count_typed(sk, ret, true);
}

/* sendfile() and splice() into a TCP socket go through tcp_sendpage, not
 * tcp_sendmsg, until Linux 6.5 (which removed it); loaded only where the
 * function exists. */
SEC("fexit/tcp_sendpage")
int BPF_PROG(tcptop_fexit_sendpage, struct sock *sk, void *page, int offset, __u64 size, int flags, int ret)
{
	return count_typed(sk, ret, true);
}

/* tcp_recvmsg's arguments changed twice, so there is one program per
 * signature (all on the same function); user space loads the one whose
 * argument count matches the running kernel's BTF.
 * Recent kernels (6.18; addr_len dropped): tcp_recvmsg(sk, msg, len, flags). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv4, struct sock *sk, void *msg, __u64 len, int flags, int ret)
{
	if (flags & MSG_PEEK) /* peeked bytes are received again later */
		return 0;
	return count_typed(sk, ret, false);
}

/* 5.19 and later (Debian 12's 6.1): tcp_recvmsg(sk, msg, len, flags, addr_len). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv5, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len, int ret)
{
	if (flags & MSG_PEEK)
		return 0;
	return count_typed(sk, ret, false);
}

/* Before 5.19: tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len). */
SEC("fexit/tcp_recvmsg")
int BPF_PROG(tcptop_fexit_recv6, struct sock *sk, void *msg, __u64 len, int nonblock, int flags, int *addr_len,
	     int ret)
{
	if (flags & MSG_PEEK)
		return 0;
	return count_typed(sk, ret, false);
}

#endif
