// SPDX-License-Identifier: GPL-2.0-only
/* Counts the kernel's drops of the exporter's own probe traffic, by drop
 * reason and kind, on the kfree_skb tracepoint. Only packets received in
 * the exporter's network namespace are looked at, and of those only:
 *   - UDP to a reflector port             (probe_in),
 *   - UDP to a prober flow port           (reply_in),
 *   - ICMP/ICMPv6 echo replies to a ping socket's Identifier (icmp_reply_in),
 *   - TCP SYN-ACKs to a tcp flow port     (tcp_synack_in).
 * The Go side fills the ports map and reads the per-CPU counts. */
#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

/* GPL: the kernel lends its tracing helpers only to GPL programs. */
char LICENSE[] SEC("license") = "GPL";

/* Set by the loader: the inode of the exporter's network namespace. */
volatile const __u32 netns_ino = 0;

/* What a watched port is. */
enum port_role {
	ROLE_REFLECTOR = 1, /* UDP, the reflector's listen port */
	ROLE_UDP = 2,       /* UDP, a prober flow socket */
	ROLE_ICMP = 3,      /* ICMP echo Identifier of a ping socket */
	ROLE_TCP = 4,       /* TCP, a tcp prober flow port */
};

/* The kinds counted, in the order of the metric's kind label. */
enum kind {
	KIND_PROBE_IN = 0,
	KIND_REPLY_IN = 1,
	KIND_ICMP_REPLY_IN = 2,
	KIND_TCP_SYNACK_IN = 3,
};

struct port_key {
	__u16 port; /* host byte order */
	__u8 role;
	__u8 pad;
};

struct drop_key {
	__u32 reason;
	__u32 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 2048);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static __always_inline int watched(__u16 port, __u8 role)
{
	struct port_key k = {.port = port, .role = role};
	return bpf_map_lookup_elem(&ports, &k) != 0;
}

/* in_netns reports whether skb was received in the exporter's namespace:
 * by its device, or by its socket when the device is gone. */
static __always_inline int in_netns(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	__u32 ino = 0;
	if (dev) {
		ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		struct sock *sk = BPF_CORE_READ(skb, sk);
		if (sk)
			ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	return ino != 0 && ino == netns_ino;
}

/* transport finds skb's transport protocol and header offset from its
 * network header, which the receive path has set; it returns -1 for what is
 * not IPv4 or IPv6, a later fragment, or unreadable. Offsets are computed
 * here rather than taken from skb->transport_header, which is not yet set
 * for drops early in ip_rcv. */
static __always_inline int transport(struct sk_buff *skb, unsigned char **th)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh_off = BPF_CORE_READ(skb, network_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	unsigned char *nh = head + nh_off;
	__u8 b[10];

	if (nh_off == (__u16)~0U)
		return -1;
	if (proto == ETH_P_IP) {
		if (bpf_probe_read_kernel(b, sizeof(b), nh))
			return -1;
		if ((b[0] >> 4) != 4 || (((b[6] & 0x1f) << 8) | b[7]) != 0)
			return -1; /* not IPv4, or not the first fragment */
		*th = nh + (b[0] & 0x0f) * 4;
		return b[9];
	}
	if (proto == ETH_P_IPV6) {
		if (bpf_probe_read_kernel(b, 7, nh))
			return -1;
		if ((b[0] >> 4) != 6)
			return -1;
		*th = nh + 40; /* probes carry no extension headers */
		return b[6];
	}
	return -1;
}

/* classify returns the kind of a received packet of ours, or -1. */
static __always_inline int classify(struct sk_buff *skb)
{
	unsigned char *th = 0;
	__u8 h[14];
	int proto;

	if (BPF_CORE_READ(skb, skb_iif) == 0)
		return -1; /* sent by this host, never received */
	if (!in_netns(skb))
		return -1;
	proto = transport(skb, &th);
	if (proto < 0 || !th)
		return -1;
	if (bpf_probe_read_kernel(h, sizeof(h), th))
		return -1;
	switch (proto) {
	case IPPROTO_UDP: {
		__u16 dport = ((__u16)h[2] << 8) | h[3];
		if (watched(dport, ROLE_REFLECTOR))
			return KIND_PROBE_IN;
		if (watched(dport, ROLE_UDP))
			return KIND_REPLY_IN;
		return -1;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* Echo Reply: type 0 (RFC 792) or 129 (RFC 4443), code 0. */
		__u8 reply = proto == IPPROTO_ICMP ? 0 : 129;
		__u16 id = ((__u16)h[4] << 8) | h[5];
		if (h[0] == reply && h[1] == 0 && watched(id, ROLE_ICMP))
			return KIND_ICMP_REPLY_IN;
		return -1;
	}
	case IPPROTO_TCP: {
		__u16 dport = ((__u16)h[2] << 8) | h[3];
		__u8 flags = h[13];
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == (TCP_FLAG_SYN | TCP_FLAG_ACK) &&
		    watched(dport, ROLE_TCP))
			return KIND_TCP_SYNACK_IN;
		return -1;
	}
	}
	return -1;
}

static __always_inline void count(struct sk_buff *skb, __u32 reason)
{
	int kind = classify(skb);
	if (kind < 0)
		return;
	struct drop_key k = {.reason = reason, .kind = kind};
	__u64 *n = bpf_map_lookup_elem(&drops, &k);
	if (n) {
		(*n)++; /* per CPU: no other writer */
		return;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&drops, &k, &one, BPF_NOEXIST)) {
		/* Another CPU added the key meanwhile; this CPU's value is 0. */
		n = bpf_map_lookup_elem(&drops, &k);
		if (n)
			(*n)++;
	}
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	count(skb, reason);
	return 0;
}

/* The same, on the classic tracepoint, for kernels whose tp_btf cannot be
 * attached. */
SEC("tracepoint/skb/kfree_skb")
int kfree_skb_tp(struct trace_event_raw_kfree_skb *ctx)
{
	count((struct sk_buff *)ctx->skbaddr, ctx->reason);
	return 0;
}
