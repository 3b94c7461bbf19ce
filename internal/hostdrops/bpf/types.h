/* The few kernel types the drop counter reads, declared with CO-RE
 * relocations (preserve_access_index): libbpf's loader (here cilium/ebpf)
 * fixes each field's offset from the running kernel's BTF, so one object
 * fits every kernel with BTF. Only the fields used are declared. */
#ifndef HOSTDROPS_TYPES_H
#define HOSTDROPS_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u64 u64;

/* From the UAPI's linux/bpf.h. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_SK_STORAGE = 24,
};
#define BPF_F_NO_PREALLOC 1
#define BPF_SK_STORAGE_GET_F_CREATE 1
#define BPF_ANY 0
#define BPF_NOEXIST 1

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
};

struct sock_common {
	possible_net_t skc_net;
	__u16 skc_num;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	int skb_iif;
	__be16 protocol;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
	__s64 tstamp;
};

enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
};

/* The classic tracepoint skb/kfree_skb's record. */
struct trace_event_raw_kfree_skb {
	void *skbaddr;
	enum skb_drop_reason reason;
};

#pragma clang attribute pop

#endif
