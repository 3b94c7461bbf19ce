package udpsock

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

func TestAppendSendMetaAllocatesNothing(t *testing.T) {
	c, err := Listen("udp4", netip.MustParseAddrPort("127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	oob := make([]byte, 0, SendOOBSize)
	src := netip.MustParseAddr("127.0.0.2")
	if n := testing.AllocsPerRun(100, func() { oob = c.AppendSendMeta(oob[:0], src, 0, 0xb8) }); n != 0 {
		t.Fatalf("AppendSendMeta: %v allocs", n)
	}
}

// loopback returns the loopback address of network ("udp4" or "udp6").
func loopback(network string) netip.Addr {
	if network == "udp6" {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// listenPair opens a sender and a receiver on network's loopback.
func listenPair(t *testing.T, network string, o Options) (a, b *Conn) {
	t.Helper()
	for _, c := range []**Conn{&a, &b} {
		var err error
		if *c, err = Listen(network, netip.AddrPortFrom(loopback(network), 0), o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*c).Close() })
	}
	return a, b
}

// addrOf returns c's local address.
func addrOf(c *Conn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// message returns a message of payload to dst with a 16-octet IP, as the
// prober and the reflector fill them.
func message(payload string, dst netip.AddrPort) ipv4.Message {
	a := dst.Addr().As16()
	return ipv4.Message{Buffers: [][]byte{[]byte(payload)}, Addr: &net.UDPAddr{IP: a[:], Port: int(dst.Port())}}
}

// readAll reads n datagrams through Batch and returns their payloads and
// senders. Reads time out rather than hang if datagrams are lost.
func readAll(t *testing.T, c *Conn, n int) (payloads []string, from []netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	in := NewReadBatch(4, 64)
	bc := c.Batch()
	for len(payloads) < n {
		k, err := bc.ReadBatch(in, 0)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(payloads), n, err)
		}
		for _, m := range in[:k] {
			payloads = append(payloads, string(m.Buffers[0][:m.N]))
			ap := m.Addr.(*net.UDPAddr).AddrPort()
			from = append(from, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	return payloads, from
}

// TestBatchRoundTrip: what WriteBatch sends, ReadBatch reads, with the
// sender's address, on either path and in either family.
func TestBatchRoundTrip(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			a, b := listenPair(t, network, Options{})
			want := []string{"p0", "p1", "p2", "p3", "p4", "p5"}
			ms := make([]ipv4.Message, len(want))
			for i, p := range want {
				ms[i] = message(p, addrOf(b))
			}
			if n, err := a.Batch().WriteBatch(ms, 0); n != len(ms) || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(ms))
			}
			got, from := readAll(t, b, len(want))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("read %q, want %q", got, want)
			}
			for _, f := range from {
				if f != addrOf(a) {
					t.Fatalf("datagram from %v, want %v", f, addrOf(a))
				}
			}
		})
	}
}

// TestWriteBatchFailureCostsOneMessage: a message the kernel refuses is
// reported so that the caller's loop, the prober's and the reflector's,
// counts it as failed and still sends the rest.
func TestWriteBatchFailureCostsOneMessage(t *testing.T) {
	a, b := listenPair(t, "udp4", Options{})
	ms := []ipv4.Message{
		message("ok0", addrOf(b)),
		message("refused", netip.MustParseAddrPort("[2001:db8::1]:9")), // IPv6 on an IPv4 socket
		message("ok1", addrOf(b)),
	}
	bc := a.Batch()
	sent, failed := 0, 0
	for i := 0; i < len(ms); {
		w, err := bc.WriteBatch(ms[i:], 0)
		w = max(w, 0)
		sent, i = sent+w, i+w
		if i < len(ms) && (err != nil || w == 0) {
			failed, i = failed+1, i+1
		}
	}
	if sent != 2 || failed != 1 {
		t.Fatalf("sent %d, failed %d; want 2 and 1", sent, failed)
	}
	got, _ := readAll(t, b, 2)
	slices.Sort(got)
	if !slices.Equal(got, []string{"ok0", "ok1"}) {
		t.Errorf("read %q", got)
	}
}

// TestInitialTTL: the TTL / Hop Limit a socket sends with is the system's
// default, 64 on Linux, FreeBSD and macOS unless changed.
func TestInitialTTL(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		a, _ := listenPair(t, network, Options{})
		if ttl := a.InitialTTL(); ttl != 64 {
			t.Errorf("%s: InitialTTL = %d, want 64", network, ttl)
		}
	}
}
