/* The few kernel structures and fields the BPF program reads. CO-RE
 * (preserve_access_index) relocates each field by name against the running
 * kernel's BTF, so only names and types matter here, not offsets or the
 * fields left out. This replaces a generated vmlinux.h. */
#ifndef TCPTOP_KERNEL_TYPES_H
#define TCPTOP_KERNEL_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	int sk_err;
};

/* Reached through bpf_skc_to_tcp_sock (typed hooks) or read with CO-RE. */
struct tcp_sock {
	__u32 srtt_us; /* smoothed RTT << 3, in microseconds */
	__u32 total_retrans; /* what TCP_INFO's tcpi_total_retrans says */
};

struct sk_buff {
	char cb[48];
};

/* What TCP keeps in skb->cb: tcp_skb_pcount() is its tcp_gso_segs. */
struct tcp_skb_cb {
	__u32 seq;
	__u32 end_seq;
	__u16 tcp_gso_segs;
};

/* The context of a socket-local-storage iterator program. */
struct seq_file;
struct bpf_map;

/* A task's cgroup v2 directory name: task->cgroups->dfl_cgrp->kn->name. */
struct kernfs_node {
	const char *name;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	struct css_set *cgroups;
};

struct bpf_iter_meta {
	struct seq_file *seq;
};

struct bpf_iter__bpf_sk_storage_map {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	struct sock *sk;
	void *value;
};

#pragma clang attribute pop

#endif
