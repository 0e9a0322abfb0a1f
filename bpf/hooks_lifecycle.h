/* A connection's life: sock:inet_sock_set_state (Linux >= 4.16) and the
 * tcp:tcp_send_reset / tcp:tcp_receive_reset tracepoints, written on the
 * socket's owner's value; attached with the close hook's kind (tp_btf, or
 * raw_tp where the kernel refuses tp_btf), like the retransmit hook.
 *
 *   SYN_SENT             connect(), in the connecting process: its owner entry
 *                        is made now (a failed connect never moves a byte),
 *                        hidden from readers until its local port is known
 *   SYN_SENT -> ESTAB    connected: the connect time, the port
 *   SYN_SENT -> CLOSE    the connect failed: the socket's error
 *   SYN_RECV -> ESTAB    a server's handshake completed (softirq: no process;
 *                        a pending owner until a process moves bytes on it)
 *   * -> CLOSE           closed: the lifetime since established (tcplife) */
#ifndef TCPTOP_HOOKS_LIFECYCLE_H
#define TCPTOP_HOOKS_LIFECYCLE_H

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

static __always_inline void state_changed(struct sock *sk, int oldstate, int newstate, bool typed)
{
	if (settings.count_nothing || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	__u64 now = bpf_ktime_get_ns();
	struct tcptop_conn_value *conn;
	if (newstate == TCP_SYN_SENT) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		if (filtered_out(pid_tgid))
			return;
		conn = owner_of(sk, typed, true, pid_tgid >> 32);
		if (!conn)
			return;
		conn->role = TCPTOP_ROLE_CLIENT;
		conn->opened_ns = now;
		conn->connecting = 1;
		return;
	}
	if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_RECV) {
		conn = owner_of(sk, typed, true, 0);
		if (!conn)
			return;
		conn->role = TCPTOP_ROLE_SERVER;
		conn->established = 1;
		conn->established_ns = now;
		return;
	}
	conn = owner_of(sk, typed, false, 0);
	if (!conn)
		return;
	if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_SENT) {
		conn->established = 1;
		conn->established_ns = now;
		if (conn->opened_ns)
			conn->connect_us = (now - conn->opened_ns) / 1000;
		note_port(conn, sk);
		conn->connecting = 0;
	} else if (newstate == TCP_CLOSE && oldstate == TCP_SYN_SENT) {
		int err = BPF_CORE_READ(sk, sk_err);
		conn->connect_error = err ? err : -1;
		note_port(conn, sk);
		conn->connecting = 0;
	} else if (newstate == TCP_CLOSE && conn->established_ns) {
		conn->lifetime_us = (now - conn->established_ns) / 1000;
	}
}

static __always_inline void reset_seen(struct sock *sk, bool sent, bool typed)
{
	if (settings.count_nothing || !sk)
		return;
	struct tcptop_conn_value *conn = owner_of(sk, typed, false, 0);
	if (!conn)
		return;
	note_port(conn, sk);
	if (sent)
		__sync_fetch_and_add(&conn->resets_sent, 1);
	else
		__sync_fetch_and_add(&conn->resets_received, 1);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcptop_state, struct sock *sk, int oldstate, int newstate)
{
	state_changed(sk, oldstate, newstate, true);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcptop_raw_state, struct sock *sk, int oldstate, int newstate)
{
	state_changed(sk, oldstate, newstate, false);
	return 0;
}

/* tcp_send_reset: (sk, skb) before 6.10, (sk, skb, reason) since; only the
 * socket is read, so one program fits both. The socket is NULL for a reset
 * that answers no socket. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcptop_send_reset, struct sock *sk, struct sk_buff *skb)
{
	reset_seen(sk, true, true);
	return 0;
}


SEC("raw_tp/tcp_send_reset")
int BPF_PROG(tcptop_raw_send_reset, struct sock *sk, struct sk_buff *skb)
{
	reset_seen(sk, true, false);
	return 0;
}


SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcptop_receive_reset, struct sock *sk)
{
	reset_seen(sk, false, true);
	return 0;
}

SEC("raw_tp/tcp_receive_reset")
int BPF_PROG(tcptop_raw_receive_reset, struct sock *sk)
{
	reset_seen(sk, false, false);
	return 0;
}

#endif
