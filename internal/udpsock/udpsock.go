// Package udpsock is the UDP socket layer shared by the prober and the
// reflector. Its API is the same on every platform; what a platform provides
// behind it differs, and is reported rather than failed:
//
//   - Linux (udpsock_linux.go, batch_linux.go): per-packet control messages
//     (destination address, interface, TTL / Hop Limit, DSCP) on receive and
//     source address and DSCP on send, without a setsockopt per packet;
//     batched I/O (recvmmsg(2), sendmmsg(2)) through golang.org/x/net; UDP
//     GRO and GSO; kernel software RX and TX timestamps (SO_TIMESTAMPING,
//     TX ones read from the error queue). It uses golang.org/x/sys/unix and
//     the socket's SyscallConn, never conn.File().
//   - Everywhere else, and on Linux with the build tag llama_portable
//     (udpsock_portable.go, batch_portable.go): a plain net.UDPConn, one
//     datagram per system call, no control messages, no GRO or GSO and no
//     kernel timestamps, so callers time datagrams in user space. See
//     BatchedIO, ControlMessages, KernelTimestamps, Conn.GRO and Conn.GSO.
package udpsock

import "net/netip"

// OOBSize is the size in octets of a receive control-message buffer large
// enough for every control message that a Conn enables.
const OOBSize = 256

// Options selects socket options that are set before bind.
type Options struct {
	// RecvMeta enables the per-packet destination address, TTL / Hop Limit
	// and traffic class control messages (IP_PKTINFO, IP_RECVTTL, IP_RECVTOS
	// and their IPv6 counterparts), read back into Meta. Without
	// ControlMessages it is ignored and Meta reports them unknown.
	RecvMeta bool
	// RecvTOS enables only the traffic class control message (IP_RECVTOS,
	// IPV6_RECVTCLASS), for receivers that need nothing else of RecvMeta:
	// each control message costs the kernel work on every datagram.
	// Without ControlMessages it is ignored.
	RecvTOS bool
	// TOS is the IPv4 TOS / IPv6 Traffic Class octet of every datagram sent
	// without a per-packet TOS; 0 leaves the kernel default.
	TOS int
	// ReusePort sets SO_REUSEPORT so that several sockets share one address
	// (SO_REUSEPORT_LB on FreeBSD). Linux and FreeBSD spread the datagrams
	// of different flows over the sockets; macOS delivers them all to one.
	ReusePort bool
	// RecvBuffer is the socket receive buffer to ask for, in octets
	// (SO_RCVBUFFORCE when privileged, else SO_RCVBUF up to the
	// net.core.rmem_max limit); 0 keeps the default. The portable path
	// asks for SO_RCVBUF and halves the request until the kernel accepts
	// it: FreeBSD and macOS refuse more than kern.ipc.maxsockbuf rather
	// than capping.
	RecvBuffer int
	// RxTimestamps asks the kernel for a software receive timestamp of
	// every datagram (SO_TIMESTAMPING, SOF_TIMESTAMPING_RX_SOFTWARE), read
	// back into Meta.KernelRX. Ignored without KernelTimestamps.
	RxTimestamps bool
	// TxTimestamps asks for a software transmit timestamp of every datagram
	// sent, queued on the error queue with a per-socket counter as key
	// (SOF_TIMESTAMPING_TX_SOFTWARE | OPT_ID | OPT_TSONLY); read them with
	// DrainTxTimestamps. Ignored without KernelTimestamps.
	TxTimestamps bool
	// GRO asks the kernel to hand over runs of datagrams of one flow as one
	// buffer (UDP_GRO, Linux 5.0); Meta.GROSize then gives the size of
	// each datagram in it. It is best effort: Conn.GRO reports whether the
	// kernel accepted it (never on the portable path).
	GRO bool
}

// Meta is what the kernel reported about one received datagram. On the
// portable path every field is unknown: the caller takes the read time as
// the receive time, and learns neither the destination address nor the
// TTL nor the TOS.
type Meta struct {
	// Dst is the local address the datagram was sent to; invalid when unknown.
	Dst netip.Addr
	// IfIndex is the receiving interface index; 0 when unknown.
	IfIndex int
	// TTL is the received IPv4 TTL or IPv6 Hop Limit; -1 when unknown.
	TTL int
	// TOS is the received IPv4 TOS or IPv6 Traffic Class octet (DSCP << 2 |
	// ECN); -1 when unknown.
	TOS int
	// KernelRX is the kernel's software receive timestamp in nanoseconds
	// since the Unix epoch (CLOCK_REALTIME); 0 when missing. A GRO buffer
	// has one timestamp for all its datagrams.
	KernelRX int64
	// GROSize is, when the kernel coalesced several datagrams of one flow
	// into the buffer (Options.GRO), the size in octets of each of them but
	// the last, which may be shorter; 0 for a single datagram.
	GROSize int
}

// SendOOBSize is the size in octets of a send control-message buffer for
// AppendSendMeta.
const SendOOBSize = 128

// Network returns "udp6" for an IPv6 address and "udp4" otherwise.
func Network(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "udp6"
	}
	return "udp4"
}
