// Package hostdrops counts the kernel's drops of the exporter's own probe
// traffic, by the kernel's drop reason: an eBPF program on the kfree_skb
// tracepoint (tp_btf, or the classic tracepoint skb/kfree_skb where tp_btf
// cannot be attached) looks only at packets received in the exporter's
// network namespace and, of those, only at
//
//   - UDP datagrams to a reflector port (kind probe_in),
//   - UDP datagrams to a prober flow socket's port (reply_in),
//   - ICMP and ICMPv6 Echo Replies to a ping socket's Identifier
//     (icmp_reply_in),
//   - TCP SYN-ACKs to a tcp prober flow port (tcp_synack_in).
//
// The ports come from the reflector and the prober while their sockets are
// open (Collector.WatchReflector, Collector.WatchPort). Counts live in a
// per-CPU map in the kernel; a scrape sums them. Reason names are read from
// the running kernel's BTF (enum skb_drop_reason), so new kernels' reasons
// need no change here.
//
// It works on Linux with BTF (/sys/kernel/btf/vmlinux) and needs CAP_BPF
// and CAP_PERFMON (or root). Without them, and on other systems, New still
// returns a Collector: it exports llama_exporter_host_drops_enabled 0 and
// Err says what is missing.
//
// The program's C source is in bpf/; `go generate` compiles it with
// bpf2go (clang) into the committed hostdrops_bpf{el,eb}.go and .o files,
// for little- and big-endian machines, so that `go build` needs no clang.
package hostdrops

//go:generate go tool bpf2go -tags linux -cflags "-O2 -g -Wall -Werror" hostdrops bpf/hostdrops.c

import (
	"strconv"
	"strings"
)

// Kinds are the values of the kind label, indexed by the program's kind
// number.
var Kinds = [...]string{"probe_in", "reply_in", "icmp_reply_in", "tcp_synack_in"}

// Prober flow socket protocols that WatchPort accepts.
const (
	// UDP is a UDP flow socket's local port (stamp, llama).
	UDP = "udp"
	// ICMP is a ping socket's echo Identifier (icmp, IPv4 or IPv6).
	ICMP = "icmp"
	// TCP is a tcp flow's source port.
	TCP = "tcp"
)

// Port roles, as the program's ports map keys them.
const (
	roleReflector = 1
	roleUDP       = 2
	roleICMP      = 3
	roleTCP       = 4
)

// Drop is one series of llama_host_drops_total.
type Drop struct {
	// Reason is the kernel's drop reason in lower case, without the
	// SKB_DROP_REASON_ prefix ("netfilter_drop", "no_socket").
	Reason string
	// Kind is one of Kinds.
	Kind string
}

// reasonName turns an enum skb_drop_reason constant's name into the label
// value: SKB_DROP_REASON_NO_SOCKET is no_socket.
func reasonName(enumName string) string {
	return strings.ToLower(strings.TrimPrefix(enumName, "SKB_DROP_REASON_"))
}

// unknownReason names a reason number the kernel's BTF does not list.
func unknownReason(n uint32) string { return "reason_" + strconv.FormatUint(uint64(n), 10) }
