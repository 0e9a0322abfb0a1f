/* Read path "storage_array": for kernels that allow socket storage in
 * tracing programs but refuse its iterator. The owner's counters live in a
 * slot of the "slots" array; the socket's storage holds only the slot's
 * index, so the hot path is the fast path's storage lookup plus an array
 * index (inlined by the verifier) and one atomic add. User space maps the
 * array into its memory (BPF_F_MMAPABLE) and reads it without a system
 * call; it sees every network namespace, like the other read paths.
 *
 * A slot's life: popped from "free_slots", filled, then LIVE once the
 * socket's storage points at it; CLOSED at tcp_destroy_sock; user space
 * takes its final counts, marks it FREE and pushes it back on "free_slots".
 * So the final counts need no second map, and a close never finds one full:
 * with every slot in use, new sockets count as unattributed.
 *
 * User space pushes every slot on "free_slots" before the programs attach,
 * the highest first, so never-used slots come off in order and the slots
 * ever used are [0, slots_taken): user space reads no further. Any CPU can
 * take any free slot (the stack is one pool, under its own lock). */
#ifndef TCPTOP_STORE_STORAGE_ARRAY_H
#define TCPTOP_STORE_STORAGE_ARRAY_H

/* What a socket's storage holds on this path. */
struct tcptop_slot_ref {
	__u64 cookie;
	__u32 owner_tgid;
	__u32 slot;
	__u16 shared; /* another process used it too: its entries are in "conns" */
	__u16 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcptop_slot_ref);
} socket_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* resized by user space before load */
	__type(key, __u32);
	__type(value, struct tcptop_slot);
} slots SEC(".maps");

/* Indexes of free slots (TCPTOP_SLOT_REUSED: used before). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 1); /* resized by user space before load */
	__uint(value_size, sizeof(__u32));
} free_slots SEC(".maps");

/* How many never-used slots were taken: one counter, added atomically. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} slots_taken SEC(".maps");

/* A slot for a new socket; false: every slot is in use. */
static __always_inline bool take_slot(__u32 *index)
{
	__u32 popped;
	if (bpf_map_pop_elem(&free_slots, &popped))
		return false;
	*index = popped & ~TCPTOP_SLOT_REUSED;
	if (!(popped & TCPTOP_SLOT_REUSED)) {
		__u32 zero = 0;
		__u64 *taken = bpf_map_lookup_elem(&slots_taken, &zero);
		if (taken) /* user space reads slots [0, taken) */
			__sync_fetch_and_add(taken, 1);
	}
	return true;
}

static __always_inline struct tcptop_slot *slot_of(struct tcptop_slot_ref *ref)
{
	__u32 index = ref->slot;
	return bpf_map_lookup_elem(&slots, &index);
}

/* Cold path: a socket without a slot yet, or used by a second process. */
static __noinline int count_array_slow(struct sock *sk, struct tcptop_slot_ref *ref, __u32 tgid, int ret,
				       bool is_send)
{
	if (ref && ref->owner_tgid == 0) { /* a pending owner: this process claims it */
		struct tcptop_slot *pending = slot_of(ref);
		if (!pending)
			return unattributed(ret, is_send);
		pending->tgid = tgid;
		claim(&pending->conn, &ref->owner_tgid, tgid, ret, is_send);
		return 0;
	}
	if (ref) /* the owner has a slot: this is another process */
		return count_shared(sk, ref->cookie, &ref->shared, tgid, ret, is_send);
	__u32 index;
	if (!take_slot(&index))
		return unattributed(ret, is_send);
	struct tcptop_slot *slot = bpf_map_lookup_elem(&slots, &index);
	if (!slot)
		return unattributed(ret, is_send);
	/* Filled while FREE: user space skips it until it is LIVE. */
	/* A slot is reused: every field of the last socket's value goes. */
	struct tcptop_conn_value fresh = {};
	read_connection(sk, &fresh);
	slot->conn = fresh;
	slot->cookie = bpf_get_socket_cookie(sk);
	slot->tgid = tgid;
	struct tcptop_slot_ref initial = { .cookie = slot->cookie, .owner_tgid = tgid, .slot = index };
	ref = bpf_sk_storage_get(&socket_slots, sk, &initial, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ref || ref->slot != index) {
		/* No memory, or another CPU gave the socket its slot first. */
		__u32 back = index | TCPTOP_SLOT_REUSED;
		bpf_map_push_elem(&free_slots, &back, 0);
		if (!ref)
			return unattributed(ret, is_send);
		if (ref->owner_tgid != tgid)
			return count_shared(sk, ref->cookie, &ref->shared, tgid, ret, is_send);
		slot = slot_of(ref);
		if (!slot)
			return unattributed(ret, is_send);
	} else {
		slot->state = TCPTOP_SLOT_LIVE;
		tracked_changed(1);
	}
	add_bytes(&slot->conn, ret, is_send);
	slot->conn.srtt_us = srtt_typed(sk);
	return 0;
}

static __always_inline int count_array(struct sock *sk, __u32 tgid, int ret, bool is_send)
{
	struct tcptop_slot_ref *ref = bpf_sk_storage_get(&socket_slots, sk, 0, 0);
	if (ref && ref->owner_tgid == tgid) {
		struct tcptop_slot *slot = slot_of(ref);
		if (slot) {
			add_bytes(&slot->conn, ret, is_send);
			/* No iterator reads the socket on this path: its RTT as of
			 * a recent send or receive of the owner (and of its close). */
			if (rtt_sample_due(&slot->conn, is_send))
				slot->conn.srtt_us = srtt_typed(sk);
			return 0;
		}
	}
	return count_array_slow(sk, ref, tgid, ret, is_send);
}

static __always_inline void close_array(struct sock *sk)
{
	struct tcptop_slot_ref *ref = bpf_sk_storage_get(&socket_slots, sk, 0, 0);
	if (!ref)
		return;
	add_stat(TCPTOP_STAT_CLOSES, 1);
	tracked_changed(-1);
	if (ref->shared)
		mark_shared_final(ref->cookie);
	struct tcptop_slot *slot = slot_of(ref);
	if (slot) {
		slot->conn.srtt_us = srtt_typed(sk);
		take_retransmits(&slot->conn, total_retrans_typed(sk));
		slot->state = TCPTOP_SLOT_CLOSED;
	}
}

/* The owner's value of a socket; with `make`, made if missing (tgid 0: a
 * pending owner, where allowed). */
static __always_inline struct tcptop_conn_value *owner_array(struct sock *sk, bool make, __u32 tgid)
{
	struct tcptop_slot_ref *ref = bpf_sk_storage_get(&socket_slots, sk, 0, 0);
	if (!ref && make && early_entry_allowed(tgid)) {
		count_array_slow(sk, 0, tgid, 0, false);
		ref = bpf_sk_storage_get(&socket_slots, sk, 0, 0);
	}
	struct tcptop_slot *slot = ref ? slot_of(ref) : 0;
	return slot ? &slot->conn : 0;
}

#endif
