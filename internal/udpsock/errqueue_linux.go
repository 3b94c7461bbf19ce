//go:build linux && !llama_portable

package udpsock

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// EnableICMPErrors asks the kernel to queue the ICMP and ICMPv6 errors
// that the socket's datagrams draw (IP_RECVERR, IPV6_RECVERR; no
// privileges needed) and has DrainTxTimestamps hand each to f, with its
// offender, type, code, quoted payload and receive timestamp. The error
// queue also carries the transmit timestamps: sock_extended_err's origin
// tells them apart. f runs inside DrainTxTimestamps and must not call it.
//
// Note that the kernel then also reports each such error once as the
// error of the socket's next receive or send call (EHOSTUNREACH,
// ECONNREFUSED, …), which sent nothing: callers retry such a send once.
// The error is that of setsockopt(2).
func (c *Conn) EnableICMPErrors(f func(*ICMPError)) error {
	level, name := unix.IPPROTO_IP, unix.IP_RECVERR
	if c.v6 {
		level, name = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	var serr error
	if err := c.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, name, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if c.tx == nil {
		c.tx = newTxBatch()
	}
	c.icmpFn = f
	return nil
}

// icmpMessage hands the ICMP error in one error-queue message (control
// messages oob, payload the quoted datagram) to icmpFn, and reports
// whether it was one. Called with txMu held.
func (c *Conn) icmpMessage(oob, payload []byte) bool {
	if !parseICMPError(oob, &c.icmp) {
		return false
	}
	c.icmp.Quote = payload
	c.icmpFn(&c.icmp)
	c.icmp.Quote = nil
	return true
}

// Layout of struct sock_extended_err (linux/errqueue.h), which the
// offender's struct sockaddr follows (SO_EE_OFFENDER).
const (
	eeOrigin   = 4
	eeType     = 5
	eeCode     = 6
	eeLen      = 16
	sinAddr    = eeLen + 4 // sockaddr_in: family 2, port 2, address 4
	sin6Addr   = eeLen + 8 // sockaddr_in6: family 2, port 2, flow info 4, address 16
	sockFamily = eeLen
)

// parseICMPError decodes the control messages of one error-queue message
// into e (all but Quote) and reports whether it is an ICMP or ICMPv6
// error (origin SO_EE_ORIGIN_ICMP or SO_EE_ORIGIN_ICMP6) rather than a
// transmit timestamp or a local error. Malformed messages are not ICMP
// errors. It does not allocate.
func parseICMPError(oob []byte, e *ICMPError) bool {
	*e = ICMPError{}
	icmp := false
	for len(oob) > 0 {
		h, data, rest, err := nextCmsg(oob)
		if err != nil {
			break
		}
		oob = rest
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPING:
			e.KernelRX = softwareTimestamp(data)
		case (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR) ||
			(h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR):
			icmp = extendedErr(data, e) || icmp
		}
	}
	return icmp
}

// extendedErr reads a struct sock_extended_err and its offender into e,
// reporting whether it comes from an ICMP or ICMPv6 message.
func extendedErr(d []byte, e *ICMPError) bool {
	if len(d) < eeLen {
		return false
	}
	switch d[eeOrigin] {
	case unix.SO_EE_ORIGIN_ICMP:
		e.V6 = false
	case unix.SO_EE_ORIGIN_ICMP6:
		e.V6 = true
	default:
		return false
	}
	e.Type, e.Code = d[eeType], d[eeCode]
	if len(d) < sockFamily+2 {
		return true
	}
	switch binary.NativeEndian.Uint16(d[sockFamily:]) {
	case unix.AF_INET:
		if len(d) >= sinAddr+4 {
			e.Offender = netip.AddrFrom4([4]byte(d[sinAddr : sinAddr+4]))
		}
	case unix.AF_INET6:
		if len(d) >= sin6Addr+16 {
			e.Offender = netip.AddrFrom16([16]byte(d[sin6Addr : sin6Addr+16])).Unmap()
		}
	}
	return true
}

// AppendHopLimit appends to oob the control message that sends one
// datagram with TTL (IPv4, IP_TTL) or Hop Limit (IPv6, IPV6_HOPLIMIT)
// ttl, 1..255, instead of the socket's: no setsockopt, so the socket's
// other datagrams keep theirs. It does not allocate when oob has
// SendOOBSize octets of capacity.
func (c *Conn) AppendHopLimit(oob []byte, ttl int) []byte {
	level, typ := int32(unix.IPPROTO_IP), int32(unix.IP_TTL)
	if c.v6 {
		level, typ = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
	}
	binary.NativeEndian.PutUint32(cmsg(&oob, level, typ, 4), uint32(ttl))
	return oob
}
