//go:build linux && !llama_portable

package icmpsock

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// rawConn is a raw ICMP or ICMPv6 socket that behaves like a ping socket.
type rawConn struct {
	*net.IPConn
	*udpsock.SocketExtras
	v6    bool
	id    uint16
	local *net.UDPAddr
}

func (*rawConn) Kind() Kind { return Raw }

// LocalAddr returns the bound address with the Identifier as port.
func (c *rawConn) LocalAddr() net.Addr { return c.local }

// Batch returns the socket's batched I/O, which sets the Identifier of
// what it writes and strips the IPv4 header of what it reads.
func (c *rawConn) Batch() udpsock.BatchConn {
	b := &rawBatch{v6: c.v6, id: c.id}
	if c.v6 {
		b.bc = ipv6.NewPacketConn(c.IPConn)
	} else {
		b.bc = ipv4.NewPacketConn(c.IPConn)
	}
	return b
}

func listenRaw(v6 bool, laddr netip.AddrPort, o udpsock.Options) (Conn, error) {
	fd, err := socket(v6, unix.SOCK_RAW)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close() // FilePacketConn works on a duplicate
	id := laddr.Port()
	if id == 0 {
		id = uint16(nextIdent.Add(1))
	}
	if err := attachFilter(fd, v6, id); err != nil {
		return nil, err
	}
	o.GRO, o.ReusePort = false, false
	if err := udpsock.SetOptions(fd, v6, o); err != nil {
		return nil, err
	}
	// A raw socket has no port: bind the address alone.
	if err := unix.Bind(fd, sockaddr(laddr.Addr(), v6)); err != nil {
		return nil, fmt.Errorf("bind %s: %w", laddr.Addr(), err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	ic, ok := pc.(*net.IPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("raw socket is a %T", pc)
	}
	rc, err := ic.SyscallConn()
	if err != nil {
		ic.Close()
		return nil, err
	}
	local := &net.UDPAddr{IP: laddr.Addr().AsSlice(), Port: int(id)}
	return &rawConn{IPConn: ic, SocketExtras: udpsock.NewSocketExtras(rc, v6, o), v6: v6, id: id, local: local}, nil
}

func sockaddr(a netip.Addr, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Addr: a.As16()}
	}
	return &unix.SockaddrInet4{Addr: a.Unmap().As4()}
}

// attachFilter makes the kernel queue on fd only the echo replies with
// Identifier id: a raw socket otherwise sees every ICMP message the host
// receives, and on loopback its own requests too. An IPv4 raw socket's
// filter sees the IP header, an IPv6 one's the ICMPv6 header.
func attachFilter(fd int, v6 bool, id uint16) error {
	var prog []bpf.Instruction
	if v6 {
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 1}, // Type
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv6.ICMPTypeEchoReply), SkipTrue: 3},
			bpf.LoadAbsolute{Off: 4, Size: 2}, // Identifier
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(id), SkipTrue: 1},
		}
	} else {
		prog = []bpf.Instruction{
			bpf.LoadMemShift{Off: 0},          // X = IP header length
			bpf.LoadIndirect{Off: 0, Size: 1}, // Type
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv4.ICMPTypeEchoReply), SkipTrue: 3},
			bpf.LoadIndirect{Off: 4, Size: 2}, // Identifier
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(id), SkipTrue: 1},
		}
	}
	prog = append(prog, bpf.RetConstant{Val: 0xffffffff}, bpf.RetConstant{Val: 0})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fp := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_FILTER: %w", err)
	}
	return nil
}

// rawBatch is a raw socket's batched I/O, made to look like a ping
// socket's. It belongs to one goroutine.
type rawBatch struct {
	bc    udpsock.BatchConn
	v6    bool
	id    uint16
	addrs []net.UDPAddr // the senders of the last read, reused
}

// WriteBatch writes Echo Requests with the socket's Identifier.
func (b *rawBatch) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	for i := range ms {
		if p := ms[i].Buffers[0]; len(p) >= 8 {
			binary.BigEndian.PutUint16(p[4:6], b.id)
			if !b.v6 { // the kernel computes the ICMPv6 checksum
				p[2], p[3] = 0, 0
				binary.BigEndian.PutUint16(p[2:4], checksum(p))
			}
		}
	}
	return b.bc.WriteBatch(ms, flags)
}

// ReadBatch reads Echo Replies, without their IPv4 header, each from a
// *net.UDPAddr of port 0.
func (b *rawBatch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := b.bc.ReadBatch(ms, flags)
	if len(b.addrs) < len(ms) {
		b.addrs = make([]net.UDPAddr, len(ms))
		for i := range b.addrs {
			b.addrs[i].IP = make(net.IP, 0, net.IPv6len)
		}
	}
	for i := range ms[:max(n, 0)] {
		m, a := &ms[i], &b.addrs[i]
		if ia, ok := m.Addr.(*net.IPAddr); ok {
			a.IP, a.Zone = append(a.IP[:0], ia.IP...), ia.Zone
			m.Addr = a
		}
		if !b.v6 {
			m.N = stripIPv4(m.Buffers[0][:m.N])
		}
	}
	return n, err
}

// stripIPv4 moves the ICMP message of IPv4 packet p to its start and
// returns its length; a packet without a valid header is left as it is.
func stripIPv4(p []byte) int {
	if len(p) < ipv4.HeaderLen || p[0]>>4 != 4 {
		return len(p)
	}
	hl := int(p[0]&0x0f) * 4
	if hl < ipv4.HeaderLen || hl > len(p) {
		return len(p)
	}
	return copy(p, p[hl:])
}

// checksum is the Internet checksum of p (RFC 1071), as ICMP computes it
// over its message (RFC 792).
func checksum(p []byte) uint16 {
	var s uint32
	for ; len(p) >= 2; p = p[2:] {
		s += uint32(p[0])<<8 | uint32(p[1])
	}
	if len(p) == 1 {
		s += uint32(p[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
