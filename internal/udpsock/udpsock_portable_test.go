//go:build !linux || llama_portable

package udpsock

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// TestPortableReportsWhatItLacks: every option is accepted, and what the
// portable path cannot provide reads as unknown or absent, not as an error.
func TestPortableReportsWhatItLacks(t *testing.T) {
	if ControlMessages || KernelTimestamps || BatchedIO {
		t.Fatalf("ControlMessages %v, KernelTimestamps %v, BatchedIO %v on the portable path", ControlMessages, KernelTimestamps, BatchedIO)
	}
	o := Options{RecvMeta: true, RecvTOS: true, RxTimestamps: true, TxTimestamps: true, GRO: true}
	a, b := listenPair(t, "udp4", o)
	if b.GRO() || b.GSO() {
		t.Errorf("GRO %v, GSO %v; want neither", b.GRO(), b.GSO())
	}
	oob := []byte{1, 2, 3}
	if got := a.AppendSendMeta(oob, loopback("udp4"), 1, 0xb8); len(got) != len(oob) {
		t.Errorf("AppendSendMeta appended %d octets", len(got)-len(oob))
	}
	if got := AppendSegmentSize(oob, 100); len(got) != len(oob) {
		t.Errorf("AppendSegmentSize appended %d octets", len(got)-len(oob))
	}
	if _, err := a.WriteToUDPAddrPort([]byte("probe"), addrOf(b)); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, m, err := b.ReadMeta(make([]byte, 64), make([]byte, OOBSize))
	if err != nil {
		t.Fatal(err)
	}
	if n != len("probe") || from != addrOf(a) || m != (Meta{TTL: -1, TOS: -1}) {
		t.Errorf("ReadMeta = %d, %v, %+v; want 5, %v and nothing known", n, from, m, addrOf(a))
	}
	if err := a.DrainTxTimestamps(func(uint32, int64) { t.Error("a transmit timestamp on the portable path") }, 0); err != nil {
		t.Error(err)
	}
}

// TestPortableTOS: Options.TOS is the socket's, in either family, since
// the portable path cannot set it per datagram.
func TestPortableTOS(t *testing.T) {
	const tos = 46 << 2
	a, _ := listenPair(t, "udp4", Options{TOS: tos})
	if got, err := ipv4.NewConn(a.UDPConn).TOS(); err != nil || got != tos {
		t.Errorf("IPv4 TOS = %#x, %v; want %#x", got, err, tos)
	}
	a6, _ := listenPair(t, "udp6", Options{TOS: tos})
	if got, err := ipv6.NewConn(a6.UDPConn).TrafficClass(); err != nil || got != tos {
		t.Errorf("IPv6 Traffic Class = %#x, %v; want %#x", got, err, tos)
	}
}

// TestPortableReusePort: sockets with ReusePort share a port, as the
// reflector's do; without it the port is taken.
func TestPortableReusePort(t *testing.T) {
	lo := netip.AddrPortFrom(loopback("udp4"), 0)
	a, err := Listen("udp4", lo, Options{ReusePort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen("udp4", addrOf(a), Options{ReusePort: true})
	if err != nil {
		t.Fatalf("second socket on %v with ReusePort: %v", addrOf(a), err)
	}
	b.Close()
	if c, err := Listen("udp4", addrOf(a), Options{}); err == nil {
		c.Close()
		t.Fatalf("second socket on %v without ReusePort bound", addrOf(a))
	}
}

// TestPortableRecvBufferBeyondLimit: a receive buffer above what the kernel
// allows (kern.ipc.maxsockbuf on FreeBSD and macOS) shrinks instead of
// failing Listen.
func TestPortableRecvBufferBeyondLimit(t *testing.T) {
	c, err := Listen("udp4", netip.AddrPortFrom(loopback("udp4"), 0), Options{RecvBuffer: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
