/* Read path "socket_hash": the counters of a socket's owner live in the
 * "sk_owners" hash, keyed by the struct sock address, and user space reads
 * the whole hash with BPF_MAP_LOOKUP_BATCH: no iterator program, so it works
 * where the kernel refuses map iterators, with any hook kind (raw_tp and
 * kprobe have no typed socket pointer, so no socket storage), and in every
 * network namespace. Its "cookie" is a number from take_number() (the
 * socket cookie helper needs a typed socket): unique for the loaded program,
 * so a reused socket address is a new connection end. At close the entry
 * moves to "closed_conns"; if that is full it stays here marked closed, and
 * user space takes its final counts from here and deletes it. */
#ifndef TCPTOP_STORE_SOCKET_HASH_H
#define TCPTOP_STORE_SOCKET_HASH_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by user space before load (1 on the other path) */
	__type(key, __u64);
	__type(value, struct tcptop_sock_value);
} sk_owners SEC(".maps");

/* The RTT of a socket on this path: as of a recent send or receive of its
 * owner (rtt_sample_due), and of its close (no iterator reads the socket). */
static __always_inline __u32 srtt_of(struct sock *sk, bool typed)
{
	return typed ? srtt_typed(sk) : srtt_untyped(sk);
}

static __noinline int count_hash_slow(struct sock *sk, struct tcptop_sock_value *owned, __u32 tgid, int ret,
				      bool is_send)
{
	if (!owned) {
		__u64 key = (__u64)sk;
		struct tcptop_sock_value initial = {};
		read_connection(sk, &initial.conn);
		if (!take_number(TCPTOP_COUNTER_CONNECTION_IDS, &initial.cookie))
			return unattributed(ret, is_send);
		initial.cookie += 1;
		initial.owner_tgid = tgid;
		if (is_send)
			initial.conn.sent_bytes = ret;
		else
			initial.conn.received_bytes = ret;
		long err = bpf_map_update_elem(&sk_owners, &key, &initial, BPF_NOEXIST);
		if (err == 0) {
			tracked_changed(1);
			return 0;
		}
		if (err != -EEXIST) /* "sk_owners" is full */
			return unattributed(ret, is_send);
		owned = bpf_map_lookup_elem(&sk_owners, &key); /* another CPU inserted it first */
		if (!owned)
			return unattributed(ret, is_send);
		if (owned->owner_tgid == tgid && !owned->closed) {
			add_bytes(&owned->conn, ret, is_send);
			return 0;
		}
	}
	/* A new socket at the address of a closed one user space has not
	 * taken yet: no room for it until then. */
	if (owned->closed)
		return unattributed(ret, is_send);
	if (owned->owner_tgid == 0) {
		claim(&owned->conn, &owned->owner_tgid, tgid, ret, is_send);
		return 0;
	}
	return count_shared(sk, owned->cookie, &owned->shared, tgid, ret, is_send);
}

static __always_inline int count_hash(struct sock *sk, __u32 tgid, int ret, bool is_send, bool typed)
{
	__u64 key = (__u64)sk;
	struct tcptop_sock_value *owned = bpf_map_lookup_elem(&sk_owners, &key);
	if (owned && owned->owner_tgid == tgid && !owned->closed) {
		add_bytes(&owned->conn, ret, is_send);
		if (rtt_sample_due(&owned->conn, is_send))
			owned->conn.srtt_us = srtt_of(sk, typed);
		return 0;
	}
	int result = count_hash_slow(sk, owned, tgid, ret, is_send);
	/* The owner's entry, if the slow path made or found one. */
	owned = bpf_map_lookup_elem(&sk_owners, &key);
	if (owned && owned->owner_tgid == tgid && !owned->closed)
		owned->conn.srtt_us = srtt_of(sk, typed);
	return result;
}

static __always_inline void close_hash(struct sock *sk, bool typed)
{
	__u64 key = (__u64)sk;
	struct tcptop_sock_value *owned = bpf_map_lookup_elem(&sk_owners, &key);
	if (!owned || owned->closed) /* untracked, or another socket's leftover */
		return;
	owned->conn.srtt_us = srtt_of(sk, typed);
	take_retransmits(&owned->conn, typed ? total_retrans_typed(sk) : total_retrans_untyped(sk));
	tracked_changed(-1);
	if (hand_over(owned))
		bpf_map_delete_elem(&sk_owners, &key); /* the address may be reused: a new entry, new id */
	else
		owned->closed = 1;
}

/* The owner's value of a socket; with `make`, made if missing (tgid 0: a
 * pending owner, where allowed). */
static __always_inline struct tcptop_conn_value *owner_hash(struct sock *sk, bool make, __u32 tgid)
{
	__u64 key = (__u64)sk;
	struct tcptop_sock_value *owned = bpf_map_lookup_elem(&sk_owners, &key);
	if (!owned && make && early_entry_allowed(tgid)) {
		count_hash_slow(sk, 0, tgid, 0, false);
		owned = bpf_map_lookup_elem(&sk_owners, &key);
	}
	return owned && !owned->closed ? &owned->conn : 0;
}

#endif
