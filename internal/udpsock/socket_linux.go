//go:build linux && !llama_portable

package udpsock

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// FromSocket makes a Conn of fd, an unbound socket that Go's net package
// reads as UDP (any SOCK_DGRAM socket of family AF_INET or, when v6,
// AF_INET6, such as an ICMP ping socket), after setting o's options (GRO
// and ReusePort excepted) and binding it to laddr. It takes fd over: fd is
// closed on error, and belongs to the Conn otherwise. Errors are those of
// setsockopt(2) and bind(2).
func FromSocket(fd int, v6 bool, laddr netip.AddrPort, o Options) (*Conn, error) {
	o.GRO, o.ReusePort = false, false
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close() // FilePacketConn works on a duplicate
	if err := SetOptions(fd, v6, o); err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, sockaddr(laddr, v6)); err != nil {
		return nil, fmt.Errorf("bind %s: %w", laddr, err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("socket is a %T, not a datagram socket", pc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	c := &Conn{UDPConn: uc, v6: v6, rc: rc}
	c.initTx(o)
	return c, nil
}

// SetOptions sets o's options on fd, an unbound socket of any protocol of
// the family that v6 says, as Listen does. GRO is not set. Errors name the
// option that failed.
func SetOptions(fd int, v6 bool, o Options) error { return setOptions(fd, v6, o) }

// initTx prepares the error-queue reads of DrainTxTimestamps.
func (c *Conn) initTx(o Options) {
	c.txDrain = c.drain
	if !o.TxTimestamps {
		return
	}
	c.tx = newTxBatch()
}

// newTxBatch returns the error queue's recvmmsg(2) vector.
func newTxBatch() *txBatch {
	b := &txBatch{}
	for i := range b.msgs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.Iovlen = 1
		b.msgs[i].Hdr.Control = &b.oobs[i][0]
	}
	return b
}

// sockaddr returns a as the socket address of the family that v6 says.
func sockaddr(a netip.AddrPort, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet4{Addr: a.Addr().Unmap().As4(), Port: int(a.Port())}
}

// SocketExtras gives a socket that Conn cannot wrap, such as a raw IP
// socket (which Go's net package reads as a *net.IPConn), the transmit
// timestamps and the initial TTL of a Conn.
type SocketExtras struct{ c Conn }

// NewSocketExtras returns the extras of the socket behind rc, of the family
// that v6 says, whose options o were set with SetOptions.
func NewSocketExtras(rc syscall.RawConn, v6 bool, o Options) *SocketExtras {
	e := &SocketExtras{c: Conn{v6: v6, rc: rc}}
	e.c.initTx(o)
	return e
}

// DrainTxTimestamps is Conn.DrainTxTimestamps for the socket.
func (e *SocketExtras) DrainTxTimestamps(f func(key uint32, ts int64), limit int) error {
	return e.c.DrainTxTimestamps(f, limit)
}

// InitialTTL is Conn.InitialTTL for the socket.
func (e *SocketExtras) InitialTTL() int { return e.c.InitialTTL() }

// isRaw reports whether fd is a raw socket.
func isRaw(fd int) bool {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && t == unix.SOCK_RAW
}
