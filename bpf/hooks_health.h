/* TCP health hooks: tcp:tcp_retransmit_skb (Linux >= 4.16): the socket's own
 * retransmit count, taken onto its owner's value. Attached with the close
 * hook's kind (tp_btf, or raw_tp where the kernel refuses tp_btf). Since
 * 6.13 the tracepoint passes the transmit's error and fires on failed
 * retransmits too (before, only on sent ones): the count is read either
 * way, the error only decides whether an untracked socket's segments count
 * as unattributed. User space loads the program whose argument count
 * matches the running kernel's BTF. */
#ifndef TCPTOP_HOOKS_HEALTH_H
#define TCPTOP_HOOKS_HEALTH_H

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcptop_retransmit, struct sock *sk, struct sk_buff *skb)
{
	retransmitted(sk, skb, true, true);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcptop_retransmit_err, struct sock *sk, struct sk_buff *skb, int err)
{
	retransmitted(sk, skb, err == 0, true);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcptop_raw_retransmit, struct sock *sk, struct sk_buff *skb)
{
	retransmitted(sk, skb, true, false);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcptop_raw_retransmit_err, struct sock *sk, struct sk_buff *skb, int err)
{
	retransmitted(sk, skb, err == 0, false);
	return 0;
}

#endif
