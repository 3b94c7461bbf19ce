// Package icmpsock opens the sockets of ICMP and ICMPv6 echo probes (RFC
// 792, RFC 4443 §4.1-4.2), one per flow, each with its own echo Identifier
// and seeing only the echo replies that carry it, so that a flow socket of
// echo requests behaves as a UDP flow socket does:
//
//   - An unprivileged ping socket (SOCK_DGRAM, IPPROTO_ICMP or
//     IPPROTO_ICMPV6), allowed when the sysctl net.ipv4.ping_group_range
//     (which covers ICMPv6 too) includes the process's group. The kernel
//     sets the Identifier (the socket's bound "port") and the checksum of
//     every request, and hands the socket only the replies with its
//     Identifier.
//   - Otherwise a raw socket (SOCK_RAW; needs CAP_NET_RAW), made to behave
//     like a ping socket: the Identifier is chosen here and written into
//     every request (with the ICMP checksum; the kernel computes the ICMPv6
//     one), a socket filter keeps only the echo replies with it, and IPv4
//     replies are read without their IP header.
//
// Either way reads give the ICMP message (header and data) and the sender
// as a *net.UDPAddr with port 0, and LocalAddr's port is the Identifier.
// Sockets carry the control messages and kernel timestamps of a
// udpsock.Conn: both kinds give software receive and transmit timestamps.
// Outside Linux, Listen fails with a *NoSocketError.
package icmpsock

import (
	"net"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// Kind is the kind of socket Listen opened.
type Kind int

const (
	// Ping is an unprivileged ICMP ping socket.
	Ping Kind = iota
	// Raw is a raw IP socket (CAP_NET_RAW).
	Raw
)

func (k Kind) String() string {
	if k == Raw {
		return "raw"
	}
	return "ping"
}

// Conn is one echo socket.
type Conn interface {
	// Batch returns the socket's batched I/O: each message written must
	// be an ICMP Echo Request of the socket's family (the Identifier and,
	// for ICMP, the checksum are overwritten); each message read is an
	// Echo Reply with the socket's Identifier, from a *net.UDPAddr of
	// port 0.
	Batch() udpsock.BatchConn
	// DrainTxTimestamps is udpsock.Conn.DrainTxTimestamps.
	DrainTxTimestamps(f func(key uint32, ts int64), limit int) error
	// InitialTTL is udpsock.Conn.InitialTTL.
	InitialTTL() int
	// LocalAddr is the bound address, a *net.UDPAddr whose port is the
	// echo Identifier.
	LocalAddr() net.Addr
	// Close closes the socket.
	Close() error
	// Kind says which kind of socket it is.
	Kind() Kind
}

// NoSocketError is Listen's error when neither a ping socket nor a raw
// socket can be opened; its message says what is missing.
type NoSocketError struct{ msg string }

func (e *NoSocketError) Error() string { return e.msg }
