//go:build linux && !llama_portable

// The Linux fast path: control messages, GRO / GSO and kernel timestamps.

package udpsock

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlMessages reports whether Options.RecvMeta and RecvTOS fill Meta
// and AppendSendMeta sets a datagram's source address and TOS: true on the
// Linux fast path.
const ControlMessages = true

// KernelTimestamps reports whether Options.RxTimestamps and TxTimestamps
// give kernel software timestamps (Meta.KernelRX, DrainTxTimestamps): true
// on the Linux fast path.
const KernelTimestamps = true

// BatchedIO reports whether BatchConn moves several datagrams per system
// call: true on the Linux fast path (recvmmsg(2), sendmmsg(2)).
const BatchedIO = true

// Conn is a UDP socket of one address family with control-message support.
type Conn struct {
	*net.UDPConn
	v6  bool
	gro bool
	rc  syscall.RawConn

	// Error-queue draining state, reused so that DrainTxTimestamps does
	// not allocate; guarded by txMu.
	txMu    sync.Mutex
	txFn    func(key uint32, ts int64)
	txErr   error
	txLimit int
	tx      *txBatch // nil without Options.TxTimestamps or EnableICMPErrors
	txDrain func(fd uintptr)
	icmpFn  func(*ICMPError) // set by EnableICMPErrors
	icmp    ICMPError        // icmpFn's argument, reused
}

// txBatchSize is how many transmit timestamps one recvmmsg(2) reads.
const txBatchSize = 32

// txBatch is the recvmmsg(2) vector for the error queue, allocated once.
// With OPT_TSONLY the messages carry no payload, only control messages.
type txBatch struct {
	msgs [txBatchSize]unix.Mmsghdr
	iovs [txBatchSize]unix.Iovec
	bufs [txBatchSize][16]byte
	oobs [txBatchSize][OOBSize]byte
}

// Listen opens a UDP socket on laddr. network is "udp4" or "udp6"; an
// IPv6 socket is always IPv6-only, so that a wildcard listen opens one socket
// per family and every datagram has family-specific control messages.
// Errors are those of bind(2) and setsockopt(2), wrapped with the address.
func Listen(network string, laddr netip.AddrPort, o Options) (*Conn, error) {
	v6 := network == "udp6"
	gro := false
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setOptions(int(fd), v6, o)
			// Best effort: a kernel without UDP_GRO delivers datagrams
			// one by one, which is correct, only slower.
			gro = o.GRO && unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, laddr.String())
	if err != nil {
		return nil, err
	}
	uc := pc.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	c := &Conn{UDPConn: uc, v6: v6, gro: gro, rc: rc}
	c.initTx(o)
	return c, nil
}

func setOptions(fd int, v6 bool, o Options) error {
	type opt struct {
		level, name, value int
		what               string
	}
	var opts []opt
	if o.ReusePort {
		opts = append(opts, opt{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, "SO_REUSEPORT"})
	}
	if v6 {
		if !isRaw(fd) { // a raw socket refuses it, and is IPv6-only anyway
			opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1, "IPV6_V6ONLY"})
		}
		if o.RecvMeta {
			opts = append(opts,
				opt{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO"},
				opt{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT"})
		}
		if o.RecvMeta || o.RecvTOS {
			opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS"})
		}
		if o.TOS != 0 {
			opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_TCLASS, o.TOS, "IPV6_TCLASS"})
		}
	} else {
		if o.RecvMeta {
			opts = append(opts,
				opt{unix.IPPROTO_IP, unix.IP_PKTINFO, 1, "IP_PKTINFO"},
				opt{unix.IPPROTO_IP, unix.IP_RECVTTL, 1, "IP_RECVTTL"})
		}
		if o.RecvMeta || o.RecvTOS {
			opts = append(opts, opt{unix.IPPROTO_IP, unix.IP_RECVTOS, 1, "IP_RECVTOS"})
		}
		if o.TOS != 0 {
			opts = append(opts, opt{unix.IPPROTO_IP, unix.IP_TOS, o.TOS, "IP_TOS"})
		}
	}
	if o.RecvBuffer > 0 {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.RecvBuffer) != nil {
			opts = append(opts, opt{unix.SOL_SOCKET, unix.SO_RCVBUF, o.RecvBuffer, "SO_RCVBUF"})
		}
	}
	var ts int
	if o.RxTimestamps {
		ts |= unix.SOF_TIMESTAMPING_RX_SOFTWARE | unix.SOF_TIMESTAMPING_SOFTWARE
	}
	if o.TxTimestamps {
		ts |= unix.SOF_TIMESTAMPING_TX_SOFTWARE | unix.SOF_TIMESTAMPING_SOFTWARE |
			unix.SOF_TIMESTAMPING_OPT_ID | unix.SOF_TIMESTAMPING_OPT_TSONLY
	}
	if ts != 0 {
		opts = append(opts, opt{unix.SOL_SOCKET, unix.SO_TIMESTAMPING, ts, "SO_TIMESTAMPING"})
	}
	for _, s := range opts {
		if err := unix.SetsockoptInt(fd, s.level, s.name, s.value); err != nil {
			return fmt.Errorf("setsockopt %s: %w", s.what, err)
		}
	}
	return nil
}

// IPv6 reports whether the socket is an IPv6 socket.
func (c *Conn) IPv6() bool { return c.v6 }

// GRO reports whether the kernel accepted Options.GRO: reads may then
// return several datagrams in one buffer (see Meta.GROSize).
func (c *Conn) GRO() bool { return c.gro }

// GSO reports whether AppendSegmentSize may be used on the socket: always
// on Linux (UDP_SEGMENT, 4.18), though a device that cannot checksum the
// buffers refuses them with EIO at send time.
func (c *Conn) GSO() bool { return true }

// ReadMeta reads one datagram into b, using oob (at least OOBSize octets) for
// control messages. It returns the payload length in octets, the sender
// with any IPv4-mapped address unmapped, and the parsed control messages.
// It does not allocate.
func (c *Conn) ReadMeta(b, oob []byte) (n int, from netip.AddrPort, m Meta, err error) {
	n, oobn, _, from, err := c.ReadMsgUDPAddrPort(b, oob)
	if err != nil {
		return 0, from, Meta{TTL: -1, TOS: -1}, err
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	return n, from, ParseMeta(oob[:oobn]), nil
}

// nextCmsg splits the first control message off oob, as
// unix.ParseOneSocketControlMessage does, but refuses a buffer shorter than
// a header, which that function would read past.
func nextCmsg(oob []byte) (h unix.Cmsghdr, data, rest []byte, err error) {
	if len(oob) < unix.SizeofCmsghdr {
		return h, nil, nil, unix.EINVAL
	}
	return unix.ParseOneSocketControlMessage(oob)
}

// ParseMeta decodes the control messages of one received datagram. Unknown
// or malformed messages are ignored. It does not allocate.
func ParseMeta(oob []byte) Meta {
	m := Meta{TTL: -1, TOS: -1}
	for len(oob) > 0 {
		h, data, rest, err := nextCmsg(oob)
		if err != nil {
			break
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex (int), spec_dst, addr (the header's destination).
			m.IfIndex = int(int32(binary.NativeEndian.Uint32(data[0:4])))
			m.Dst = netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4:
			m.TTL = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
			m.TOS = int(data[0])
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			m.Dst = netip.AddrFrom16([16]byte(data[0:16]))
			m.IfIndex = int(int32(binary.NativeEndian.Uint32(data[16:20])))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
			m.TTL = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
			m.TOS = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPING:
			m.KernelRX = softwareTimestamp(data)
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			m.GROSize = int(int32(binary.NativeEndian.Uint32(data))) // an int (udp_cmsg_recv)
		}
	}
	return m
}

// AppendSendMeta appends to oob the control messages that make one datagram
// leave from src (when valid) on interface ifIndex (IPv6; 0 = any) with the
// TOS / Traffic Class octet tos (when >= 0). It does not allocate when oob
// has SendOOBSize octets of capacity.
func (c *Conn) AppendSendMeta(oob []byte, src netip.Addr, ifIndex, tos int) []byte {
	if c.v6 {
		if src.IsValid() && src.Is6() && !src.Is4In6() {
			d := cmsg(&oob, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
			a := src.As16()
			copy(d[0:16], a[:])
			binary.NativeEndian.PutUint32(d[16:20], uint32(ifIndex))
		}
		if tos >= 0 {
			binary.NativeEndian.PutUint32(cmsg(&oob, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 4), uint32(tos))
		}
		return oob
	}
	if src.IsValid() && src.Unmap().Is4() {
		d := cmsg(&oob, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
		a := src.Unmap().As4()
		copy(d[4:8], a[:]) // ipi_spec_dst: the source address to use
	}
	if tos >= 0 {
		binary.NativeEndian.PutUint32(cmsg(&oob, unix.IPPROTO_IP, unix.IP_TOS, 4), uint32(tos))
	}
	return oob
}

// AppendSegmentSize appends to oob the control message that makes the kernel
// send one buffer as datagrams of size octets each, the last possibly
// shorter (UDP_SEGMENT, Linux UDP GSO, 4.18). The kernel refuses the send
// with EINVAL when size plus headers exceeds the route's MTU or the buffer
// holds more than 64 datagrams, and with EIO when the outgoing device cannot
// checksum them. It does not allocate when oob has SendOOBSize octets of
// capacity.
func AppendSegmentSize(oob []byte, size int) []byte {
	binary.NativeEndian.PutUint16(cmsg(&oob, unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2), uint16(size))
	return oob
}

// cmsg appends one zeroed control message with room for n data octets to
// *oob and returns its data part.
func cmsg(oob *[]byte, level, typ int32, n int) []byte {
	b := *oob
	start := len(b)
	space := unix.CmsgSpace(n)
	if cap(b)-start < space {
		nb := make([]byte, start, start+space+SendOOBSize)
		copy(nb, b)
		b = nb
	}
	b = b[:start+space]
	clear(b[start:])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = level
	h.Type = typ
	h.SetLen(unix.CmsgLen(n))
	*oob = b
	data := start + unix.CmsgLen(0)
	return b[data : data+n]
}

// softwareTimestamp returns the software timestamp (the first of the three
// struct timespec of struct scm_timestamping) in Unix nanoseconds, or 0.
func softwareTimestamp(data []byte) int64 {
	if len(data) < 16 {
		return 0
	}
	sec := int64(binary.NativeEndian.Uint64(data[0:8]))
	nsec := int64(binary.NativeEndian.Uint64(data[8:16]))
	if sec == 0 && nsec == 0 {
		return 0
	}
	return sec*1e9 + nsec
}

// DrainTxTimestamps reads, without blocking, every transmit timestamp
// queued on the socket's error queue (see Options.TxTimestamps) and calls f
// with the datagram's OPT_ID key (the count of datagrams sent on the socket
// before it) and the kernel's software transmit time in Unix nanoseconds.
// It is safe for concurrent use and does not allocate. It returns the first
// error other than EAGAIN from recvmmsg(2).
//
// limit bounds how many timestamps are read: when the caller knows how
// many it awaits, the final empty read (EAGAIN) is saved; limit <= 0 reads
// until the queue is empty.
func (c *Conn) DrainTxTimestamps(f func(key uint32, ts int64), limit int) error {
	c.txMu.Lock()
	defer c.txMu.Unlock()
	c.txFn, c.txErr, c.txLimit = f, nil, limit
	if err := c.rc.Control(c.txDrain); err != nil {
		return err
	}
	c.txFn = nil
	return c.txErr
}

// drain is the body of DrainTxTimestamps, run with the socket's fd: up to
// txBatchSize timestamps per recvmmsg(2).
func (c *Conn) drain(fd uintptr) {
	b := c.tx
	if b == nil {
		return // no transmit timestamps asked for: nothing is queued
	}
	for n := 0; c.txLimit <= 0 || n < c.txLimit; {
		want := txBatchSize
		if c.txLimit > 0 {
			want = min(want, c.txLimit-n)
		}
		for i := range want {
			b.msgs[i].Hdr.SetControllen(OOBSize)
			b.msgs[i].Hdr.Flags = 0
		}
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(want),
			unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			if errno != unix.EAGAIN {
				c.txErr = errno
			}
			return
		}
		got := int(r)
		for i := range got {
			c.txMessage(b.oobs[i][:b.msgs[i].Hdr.Controllen], b.bufs[i][:min(int(b.msgs[i].Len), len(b.bufs[i]))])
		}
		n += got
		if got < want {
			return // the queue is empty: no final EAGAIN read needed
		}
	}
}

// txMessage hands the transmit timestamp in the control messages of one
// error-queue message to txFn, or an ICMP error (with payload, the
// datagram it quotes) to icmpFn.
func (c *Conn) txMessage(oob, payload []byte) {
	if c.icmpFn != nil && c.icmpMessage(oob, payload) {
		return
	}
	var ts int64
	key, haveKey := uint32(0), false
	for len(oob) > 0 {
		h, data, rest, err := nextCmsg(oob)
		if err != nil {
			break
		}
		oob = rest
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPING:
			ts = softwareTimestamp(data)
		case (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR) ||
			(h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR):
			if len(data) >= 16 && data[4] == unix.SO_EE_ORIGIN_TIMESTAMPING {
				key, haveKey = binary.NativeEndian.Uint32(data[12:16]), true
			}
		}
	}
	if haveKey && ts != 0 {
		c.txFn(key, ts)
	}
}

// InitialTTL returns the TTL (IPv4) or unicast Hop Limit (IPv6) that the
// socket's datagrams leave with, 64 if it cannot be read.
func (c *Conn) InitialTTL() int {
	ttl := 64
	c.rc.Control(func(fd uintptr) {
		var v int
		var err error
		if c.v6 {
			v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
		} else {
			v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
		}
		if err == nil && v > 0 && v <= 255 {
			ttl = v
		}
	})
	return ttl
}
