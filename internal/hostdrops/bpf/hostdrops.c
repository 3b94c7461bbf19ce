// SPDX-License-Identifier: GPL-2.0-only
/* Counts the kernel's drops of the exporter's own probe traffic, by drop
 * reason and kind, on the kfree_skb tracepoint. Only packets received in
 * the exporter's network namespace are looked at, and of those only:
 *   - UDP to a reflector port             (probe_in),
 *   - UDP to a prober flow port           (reply_in),
 *   - ICMP/ICMPv6 echo replies to a ping socket's Identifier (icmp_reply_in),
 *   - TCP SYN-ACKs to a tcp flow port     (tcp_synack_in).
 * Replies are also counted by their flow port and remote address, so that
 * the prober can tell each session its own (reply_drops).
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

/* A reply's flow: the local port (or echo Identifier) it came to, its
 * kind, and the address it came from (IPv4 in addr[0..3]). */
struct reply_key {
	__u16 port; /* host byte order */
	__u8 kind;
	__u8 family; /* 4 or 6 */
	__u8 addr[16];
};

/* Per-CPU counts of a reply flow's drops by reason: a reason in the first
 * free slot (reason 0, "not dropped yet", is never a drop). A fifth reason
 * of one flow on one CPU goes uncounted here; drops still has it. */
#define REASON_SLOTS 4
struct reply_val {
	__u32 reason[REASON_SLOTS];
	__u64 n[REASON_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct reply_key);
	__type(value, struct reply_val);
} reply_drops SEC(".maps");

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

/* What classify learns of a packet of ours. */
struct pkt {
	int kind;
	__u16 port; /* the local port, or the echo Identifier */
	__u8 family;
	__u8 addr[16]; /* the source address */
};

/* transport finds skb's transport protocol and header from its network
 * header nh, and its source address into p; it returns -1 for what is not
 * IPv4 or IPv6, a later fragment, or unreadable. Offsets are computed here
 * rather than taken from skb->transport_header, which is not yet set for
 * drops early in ip_rcv. */
static __always_inline int transport(struct sk_buff *skb, unsigned char *nh, unsigned char **th, struct pkt *p)
{
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	__u8 b[10];

	if (proto == ETH_P_IP) {
		if (bpf_probe_read_kernel(b, sizeof(b), nh))
			return -1;
		if ((b[0] >> 4) != 4 || (((b[6] & 0x1f) << 8) | b[7]) != 0)
			return -1; /* not IPv4, or not the first fragment */
		*th = nh + (b[0] & 0x0f) * 4;
		p->family = 4;
		if (bpf_probe_read_kernel(p->addr, 4, nh + 12))
			return -1;
		return b[9];
	}
	if (proto == ETH_P_IPV6) {
		if (bpf_probe_read_kernel(b, 7, nh))
			return -1;
		if ((b[0] >> 4) != 6)
			return -1;
		*th = nh + 40; /* probes carry no extension headers */
		p->family = 6;
		if (bpf_probe_read_kernel(p->addr, 16, nh + 8))
			return -1;
		return b[6];
	}
	return -1;
}

/* classify_at fills p for a received packet of ours whose network header
 * is nh, and returns its kind, or -1 for what is not ours. */
static __always_inline int classify_at(struct sk_buff *skb, unsigned char *nh, struct pkt *p)
{
	unsigned char *th = 0;
	__u8 h[14];
	int proto;

	p->kind = -1;
	if (!in_netns(skb))
		return -1;
	proto = transport(skb, nh, &th, p);
	if (proto < 0 || !th)
		return -1;
	if (bpf_probe_read_kernel(h, sizeof(h), th))
		return -1;
	switch (proto) {
	case IPPROTO_UDP: {
		p->port = ((__u16)h[2] << 8) | h[3];
		if (watched(p->port, ROLE_REFLECTOR))
			p->kind = KIND_PROBE_IN;
		else if (watched(p->port, ROLE_UDP))
			p->kind = KIND_REPLY_IN;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* Echo Reply: type 0 (RFC 792) or 129 (RFC 4443), code 0. */
		__u8 reply = proto == IPPROTO_ICMP ? 0 : 129;
		p->port = ((__u16)h[4] << 8) | h[5];
		if (h[0] == reply && h[1] == 0 && watched(p->port, ROLE_ICMP))
			p->kind = KIND_ICMP_REPLY_IN;
		break;
	}
	case IPPROTO_TCP: {
		__u8 flags = h[13];
		p->port = ((__u16)h[2] << 8) | h[3];
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == (TCP_FLAG_SYN | TCP_FLAG_ACK) &&
		    watched(p->port, ROLE_TCP))
			p->kind = KIND_TCP_SYNACK_IN;
		break;
	}
	}
	return p->kind;
}

/* classify is classify_at for a packet being dropped, whose network header
 * the receive path has set. */
static __always_inline int classify(struct sk_buff *skb, struct pkt *p)
{
	__u16 nh_off = BPF_CORE_READ(skb, network_header);

	if (BPF_CORE_READ(skb, skb_iif) == 0)
		return -1; /* sent by this host, never received */
	if (nh_off == (__u16)~0U)
		return -1;
	return classify_at(skb, BPF_CORE_READ(skb, head) + nh_off, p);
}

/* count_reply adds a drop of reason to the reply flow of p. */
static __always_inline void count_reply(struct pkt *p, __u32 reason)
{
	struct reply_key k = {.port = p->port, .kind = p->kind, .family = p->family};
	__builtin_memcpy(k.addr, p->addr, sizeof(k.addr));
	struct reply_val *v = bpf_map_lookup_elem(&reply_drops, &k);
	if (!v) {
		struct reply_val zero = {};
		bpf_map_update_elem(&reply_drops, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&reply_drops, &k);
		if (!v)
			return; /* full */
	}
	for (int i = 0; i < REASON_SLOTS; i++) {
		if (v->reason[i] == reason || v->reason[i] == 0) {
			v->reason[i] = reason;
			v->n[i]++; /* per CPU: no other writer */
			return;
		}
	}
}

/* Receive latency by stage, for the UDP and ping sockets watched (the
 * reflector's probes, the prober's replies): a packet is followed by its
 * skb's address from netif_rx (into the per-CPU backlog) to
 * netif_receive_skb (out of it: backlog), to the socket's sk_data_ready
 * (queued on the socket: stack), and from there, in a per-socket queue,
 * to its read by sock_recvmsg (sock_recv_length: socket_queue). The read's
 * tracepoint names the socket, not the skb (UDP copies linear skbs without
 * skb_copy_datagram_iovec), so reads pair with datagrams in their order.
 * Packets that a driver hands over without netif_rx (NAPI) start at
 * netif_receive_skb. */
enum stage { STAGE_BACKLOG = 0, STAGE_STACK = 1, STAGE_SOCKET_QUEUE = 2, STAGES = 3 };
enum lat_role { LAT_PROBER = 0, LAT_REFLECTOR = 1, LAT_ROLES = 2 };

/* Buckets of 1, 2, 4, ... 65536 µs (upper bounds), and one above. */
#define LAT_BOUNDS 17

struct lat_hist {
	__u64 bucket[LAT_BOUNDS + 1];
	__u64 sum_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_ROLES *STAGES);
	__type(key, __u32);
	__type(value, struct lat_hist);
} latency SEC(".maps");

/* Where a followed packet is: the time it entered its current stage, its
 * kernel receive timestamp (skb->tstamp, which stays with it from netif_rx
 * on, to tell a reused skb address from the packet followed), the
 * watched port, and its role and stage. */
struct flight {
	__u64 since;
	__s64 tstamp;
	__u16 port;
	__u8 role;
	__u8 stage;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct flight);
} inflight SEC(".maps");

/* The skb this CPU last passed to the stack with netif_receive_skb, whose
 * delivery to a socket (sk_data_ready) follows on the same CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} current_skb SEC(".maps");

/* Followed packets given up: EV_OVERFLOW, inflight was full; EV_RESYNC, a
 * packet was found in a stage it cannot be in (its skb address was
 * reused, or a hook was missed) and followed anew or dropped. */
enum { EV_OVERFLOW = 0, EV_RESYNC = 1, EVENTS = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EVENTS);
	__type(key, __u32);
	__type(value, __u64);
} lat_events SEC(".maps");

static __always_inline void event(__u32 ev)
{
	__u64 *n = bpf_map_lookup_elem(&lat_events, &ev);
	if (n)
		(*n)++;
}

static __always_inline void observe(__u8 role, __u32 stage, __u64 now, __u64 since)
{
	__u32 idx = role * STAGES + stage;
	struct lat_hist *h = bpf_map_lookup_elem(&latency, &idx);
	__u64 ns = now > since ? now - since : 0;
	__u64 bound = 1000;
	__u32 b = LAT_BOUNDS;

	if (!h)
		return;
	/* log2 by comparison: clang 14 cannot compile __builtin_clzll for BPF. */
	for (__u32 i = 0; i < LAT_BOUNDS; i++) {
		if (ns <= bound) {
			b = i;
			break;
		}
		bound <<= 1;
	}
	if (b > LAT_BOUNDS)
		return;
	h->bucket[b]++;
	h->sum_ns += ns;
}

/* follow starts following skb, a packet of ours, in stage. */
static __always_inline void follow(struct sk_buff *skb, struct pkt *p, __u8 stage, __u64 now)
{
	__u64 key = (__u64)skb;
	struct flight f = {
		.since = now,
		.tstamp = BPF_CORE_READ(skb, tstamp),
		.port = p->port,
		.role = p->kind == KIND_PROBE_IN ? LAT_REFLECTOR : LAT_PROBER,
		.stage = stage,
	};
	if (bpf_map_update_elem(&inflight, &key, &f, BPF_ANY))
		event(EV_OVERFLOW);
}

/* ours_at_rx classifies a packet on its way in, before the stack has set
 * its network header: skb->data is at it. TCP is not followed. */
static __always_inline int ours_at_rx(struct sk_buff *skb, struct pkt *p)
{
	int kind = classify_at(skb, BPF_CORE_READ(skb, data), p);
	return kind >= 0 && kind != KIND_TCP_SYNACK_IN;
}

static __always_inline void forget(struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	bpf_map_delete_elem(&inflight, &key);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(netif_rx_btf, struct sk_buff *skb)
{
	struct pkt p = {};
	if (ours_at_rx(skb, &p))
		follow(skb, &p, STAGE_BACKLOG, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(netif_receive_skb_btf, struct sk_buff *skb)
{
	__u64 now = bpf_ktime_get_ns(), key = (__u64)skb, none = 0;
	__u32 zero = 0;
	struct flight *f = bpf_map_lookup_elem(&inflight, &key);

	if (f && f->stage == STAGE_BACKLOG && f->tstamp == BPF_CORE_READ(skb, tstamp)) {
		observe(f->role, STAGE_BACKLOG, now, f->since);
		f->since = now;
		f->stage = STAGE_STACK;
		bpf_map_update_elem(&current_skb, &zero, &key, BPF_ANY);
		return 0;
	}
	struct pkt p = {};
	if (!ours_at_rx(skb, &p)) {
		if (f)
			forget(skb); /* a stale address, reused by a packet not ours */
		bpf_map_update_elem(&current_skb, &zero, &none, BPF_ANY);
		return 0;
	}
	if (f)
		event(EV_RESYNC);
	follow(skb, &p, STAGE_STACK, now);
	bpf_map_update_elem(&current_skb, &zero, &key, BPF_ANY);
	return 0;
}

/* A watched socket's queue of followed datagrams: the times they were
 * queued (sk_data_ready), oldest at head, in the socket's own storage, so
 * that each read (sock_recv_length) pairs with the oldest. A datagram that
 * finds the queue full is not followed, and, so that no read is paired
 * with the wrong time, neither is any after it until every datagram queued
 * before it was read: missing counts those reads still to come. */
#define FIFO 64
struct sock_fifo {
	__u64 at[FIFO];
	__u32 head, tail; /* free-running; tail - head queued */
	__u32 missing;
	__u8 role;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_fifo);
} fifos SEC(".maps");

SEC("tp_btf/sk_data_ready")
int BPF_PROG(sk_data_ready_btf, const struct sock *sk)
{
	__u32 zero = 0;
	__u64 *cur = bpf_map_lookup_elem(&current_skb, &zero);
	if (!cur || !*cur)
		return 0;
	__u64 key = *cur;
	struct flight *f = bpf_map_lookup_elem(&inflight, &key);
	if (!f || f->stage != STAGE_STACK || f->port != BPF_CORE_READ(sk, __sk_common.skc_num))
		return 0; /* another socket's data, or not ours */
	__u64 now = bpf_ktime_get_ns();
	__u8 role = f->role;
	observe(role, STAGE_STACK, now, f->since);
	*cur = 0;
	bpf_map_delete_elem(&inflight, &key);
	struct sock_fifo *q = bpf_sk_storage_get(&fifos, (struct sock *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!q) {
		event(EV_OVERFLOW);
		return 0;
	}
	q->role = role;
	if (q->missing || q->tail - q->head >= FIFO) {
		q->missing++;
		event(EV_OVERFLOW);
		return 0;
	}
	q->at[q->tail % FIFO] = now;
	q->tail++;
	return 0;
}

#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length_btf, struct sock *sk, int ret, int flags)
{
	if (ret < 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)))
		return 0;
	struct sock_fifo *q = bpf_sk_storage_get(&fifos, sk, 0, 0);
	if (!q)
		return 0; /* not a socket that was given a followed datagram */
	if (q->tail != q->head) {
		observe(q->role, STAGE_SOCKET_QUEUE, bpf_ktime_get_ns(), q->at[q->head % FIFO]);
		q->head++;
		return 0;
	}
	if (q->missing)
		q->missing--; /* a datagram not followed, read in its turn */
	else
		event(EV_RESYNC); /* a datagram that reached the socket unseen */
	return 0;
}

static __always_inline void count(struct sk_buff *skb, __u32 reason)
{
	struct pkt p = {};
	int kind = classify(skb, &p);
	if (kind < 0)
		return;
	if (kind != KIND_PROBE_IN)
		count_reply(&p, reason);
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
	forget(skb);
	return 0;
}

/* The same, on the classic tracepoint, for kernels whose tp_btf cannot be
 * attached. */
SEC("tracepoint/skb/kfree_skb")
int kfree_skb_tp(struct trace_event_raw_kfree_skb *ctx)
{
	count((struct sk_buff *)ctx->skbaddr, ctx->reason);
	forget((struct sk_buff *)ctx->skbaddr);
	return 0;
}
