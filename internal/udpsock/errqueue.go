package udpsock

import "net/netip"

// ICMPError is an ICMP (RFC 792) or ICMPv6 (RFC 4443) error that the kernel
// queued on a socket's error queue for one of the socket's datagrams (see
// Conn.EnableICMPErrors): a Time Exceeded from the router where its TTL /
// Hop Limit ran out, or a Destination Unreachable.
type ICMPError struct {
	// Offender is the address of the node that sent the ICMP message
	// (SO_EE_OFFENDER): the router or host that answered; invalid when
	// the kernel gave none.
	Offender netip.Addr
	// V6 is true for ICMPv6, false for ICMP.
	V6 bool
	// Type and Code are the message's ICMP or ICMPv6 type and code.
	Type, Code uint8
	// Quote is the start of our datagram's UDP payload as the message
	// quoted it, at most 16 octets: empty when the sender quoted only the
	// IP and UDP headers (RFC 792's minimum). It is valid during the
	// callback only.
	Quote []byte
	// KernelRX is the kernel's software receive timestamp of the ICMP
	// message in Unix nanoseconds (SO_TIMESTAMPING, Options.RxTimestamps);
	// 0 when missing.
	KernelRX int64
}

// ICMP and ICMPv6 types of the errors that tracing reads.
const (
	icmpUnreachable   = 3  // RFC 792 Destination Unreachable
	icmpTimeExceeded  = 11 // RFC 792 Time Exceeded
	icmp6Unreachable  = 1  // RFC 4443 §3.1 Destination Unreachable
	icmp6TimeExceeded = 3  // RFC 4443 §3.3 Time Exceeded
)

// TimeExceeded reports a Time Exceeded message (ICMP type 11, RFC 792;
// ICMPv6 type 3, RFC 4443 §3.3): a router found the TTL / Hop Limit spent.
func (e *ICMPError) TimeExceeded() bool {
	if e.V6 {
		return e.Type == icmp6TimeExceeded
	}
	return e.Type == icmpTimeExceeded
}

// Unreachable reports a Destination Unreachable message (ICMP type 3, RFC
// 792; ICMPv6 type 1, RFC 4443 §3.1), such as a port unreachable from a
// host without a listener or an administratively prohibited from a filter.
func (e *ICMPError) Unreachable() bool {
	if e.V6 {
		return e.Type == icmp6Unreachable
	}
	return e.Type == icmpUnreachable
}
