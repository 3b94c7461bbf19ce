//go:build !linux || llama_portable

// The portable path: a plain net.UDPConn, for FreeBSD, macOS and, with the
// llama_portable build tag, Linux (so that the test suite runs it too).
// What it cannot do it reports (ControlMessages, KernelTimestamps, GRO,
// GSO) instead of failing, so the prober and the reflector run unchanged,
// with less information:
//
//   - no per-datagram destination address: a reflector on a wildcard
//     address replies from the source address the kernel's route picks,
//     which on a multi-homed host may not be the one the probe was sent to;
//   - no received TTL / Hop Limit or TOS: replies report neither, and the
//     reflector sends every reply with the socket's TOS;
//   - no kernel timestamps: datagrams are timed when read;
//   - one datagram per system call, no GRO or GSO.

package udpsock

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ControlMessages reports whether Options.RecvMeta and RecvTOS fill Meta
// and AppendSendMeta sets a datagram's source address and TOS: false on
// the portable path, which reads and writes datagrams without control
// messages.
const ControlMessages = false

// KernelTimestamps reports whether Options.RxTimestamps and TxTimestamps
// give kernel software timestamps (Meta.KernelRX, DrainTxTimestamps): false
// on the portable path, where datagrams are timed in user space.
const KernelTimestamps = false

// BatchedIO reports whether BatchConn moves several datagrams per system
// call: false on the portable path, which reads and writes one at a time.
const BatchedIO = false

// Conn is a UDP socket of one address family: on the portable path a plain
// net.UDPConn.
type Conn struct {
	*net.UDPConn
	v6 bool
}

// Listen opens a UDP socket on laddr. network is "udp4" or "udp6"; an
// IPv6 socket is always IPv6-only (Go's "udp6"), so that a wildcard listen
// opens one socket per family. Of the options only TOS, ReusePort and
// RecvBuffer have an effect. Errors are those of bind(2) and
// setsockopt(2), wrapped with the address or option.
func Listen(network string, laddr netip.AddrPort, o Options) (*Conn, error) {
	var lc net.ListenConfig
	if o.ReusePort {
		lc.Control = reusePort
	}
	pc, err := lc.ListenPacket(context.Background(), network, laddr.String())
	if err != nil {
		return nil, err
	}
	c := &Conn{UDPConn: pc.(*net.UDPConn), v6: network == "udp6"}
	if err := c.setTOS(o.TOS); err != nil {
		c.Close()
		return nil, err
	}
	if o.RecvBuffer > 0 {
		setReadBuffer(c.UDPConn, o.RecvBuffer)
	}
	return c, nil
}

// setTOS sets the TOS / Traffic Class of every datagram sent; 0 keeps the
// kernel default.
func (c *Conn) setTOS(tos int) error {
	if tos == 0 {
		return nil
	}
	if c.v6 {
		if err := ipv6.NewConn(c.UDPConn).SetTrafficClass(tos); err != nil {
			return fmt.Errorf("setsockopt IPV6_TCLASS: %w", err)
		}
		return nil
	}
	if err := ipv4.NewConn(c.UDPConn).SetTOS(tos); err != nil {
		return fmt.Errorf("setsockopt IP_TOS: %w", err)
	}
	return nil
}

// minReadBuffer is where setReadBuffer stops halving, in octets: below it
// the kernel's default is as good.
const minReadBuffer = 64 << 10

// setReadBuffer asks for a receive buffer of up to n octets, halving the
// request until the kernel accepts it: FreeBSD and macOS refuse a buffer
// above kern.ipc.maxsockbuf (ENOBUFS) where Linux caps it. A smaller
// buffer only drops bursts sooner, so no error is returned.
func setReadBuffer(c *net.UDPConn, n int) {
	for ; n >= minReadBuffer; n /= 2 {
		if c.SetReadBuffer(n) == nil {
			return
		}
	}
}

// IPv6 reports whether the socket is an IPv6 socket.
func (c *Conn) IPv6() bool { return c.v6 }

// GRO reports whether reads may return several datagrams in one buffer:
// never on the portable path.
func (c *Conn) GRO() bool { return false }

// GSO reports whether AppendSegmentSize may be used on the socket: never on
// the portable path, where each datagram is written on its own.
func (c *Conn) GSO() bool { return false }

// ReadMeta reads one datagram into b; oob is not used. It returns the
// payload length in octets, the sender with any IPv4-mapped address
// unmapped, and a Meta with every field unknown.
func (c *Conn) ReadMeta(b, oob []byte) (n int, from netip.AddrPort, m Meta, err error) {
	m = Meta{TTL: -1, TOS: -1}
	n, from, err = c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, from, m, err
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), m, nil
}

// ParseMeta returns a Meta with every field unknown: the portable path asks
// for no control messages, so there are none to decode.
func ParseMeta(oob []byte) Meta { return Meta{TTL: -1, TOS: -1} }

// AppendSendMeta returns oob unchanged: the portable path cannot choose a
// datagram's source address, interface or TOS, which are the socket's
// (see ControlMessages).
func (c *Conn) AppendSendMeta(oob []byte, src netip.Addr, ifIndex, tos int) []byte {
	return oob
}

// AppendSegmentSize returns oob unchanged: the portable path has no UDP
// GSO, so a buffer written leaves as one datagram. Callers check Conn.GSO
// before building buffers of several datagrams.
func AppendSegmentSize(oob []byte, size int) []byte { return oob }

// DrainTxTimestamps returns nil without calling f: the portable path has
// no kernel transmit timestamps (see KernelTimestamps).
func (c *Conn) DrainTxTimestamps(f func(key uint32, ts int64), limit int) error {
	return nil
}

// defaultTTL is what InitialTTL reports when the socket cannot tell: the
// default of Linux, FreeBSD and macOS.
const defaultTTL = 64

// InitialTTL returns the TTL (IPv4) or unicast Hop Limit (IPv6) that the
// socket's datagrams leave with, 64 if it cannot be read.
func (c *Conn) InitialTTL() int {
	var v int
	var err error
	if c.v6 {
		v, err = ipv6.NewConn(c.UDPConn).HopLimit()
	} else {
		v, err = ipv4.NewConn(c.UDPConn).TTL()
	}
	if err != nil || v <= 0 || v > 255 {
		return defaultTTL
	}
	return v
}
