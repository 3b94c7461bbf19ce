package udpsock

import (
	"net/netip"
	"testing"
	"time"
)

func TestKernelTimestampsOnLoopback(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			if network == "udp6" {
				lo = netip.IPv6Loopback()
			}
			o := Options{RecvMeta: true, RxTimestamps: true, TxTimestamps: true, TOS: 46 << 2}
			a, err := Listen(network, netip.AddrPortFrom(lo, 0), o)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := Listen(network, netip.AddrPortFrom(lo, 0), o)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			dst := b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
			before := time.Now().UnixNano()
			const n = 5
			for range n {
				if _, err := a.WriteToUDPAddrPort([]byte("probe"), dst); err != nil {
					t.Fatal(err)
				}
			}
			keys := map[uint32]int64{}
			deadline := time.Now().Add(2 * time.Second)
			for len(keys) < n && time.Now().Before(deadline) {
				if err := a.DrainTxTimestamps(func(k uint32, ts int64) { keys[k] = ts }, 0); err != nil {
					t.Fatal(err)
				}
			}
			for k := range uint32(n) {
				if ts, ok := keys[k]; !ok || ts < before || ts > time.Now().UnixNano() {
					t.Fatalf("TX timestamp of datagram %d: %d (present %v), want within the test", k, ts, ok)
				}
			}
			// Linux turns receive timestamping on for the whole host
			// asynchronously when the first socket asks for it, so the
			// first datagrams may come without one (the prober counts those
			// as fallbacks): read until one carries it, sending more.
			buf, oob := make([]byte, 64), make([]byte, OOBSize)
			b.SetReadDeadline(time.Now().Add(2 * time.Second))
			var m Meta
			var from netip.AddrPort
			for i := 0; m.KernelRX == 0; i++ {
				if i >= n {
					if _, err := a.WriteToUDPAddrPort([]byte("probe"), dst); err != nil {
						t.Fatal(err)
					}
				}
				var err error
				if _, from, m, err = b.ReadMeta(buf, oob); err != nil {
					t.Fatalf("no datagram with a kernel receive timestamp: %v", err)
				}
			}
			if m.KernelRX < keys[0] || m.KernelRX > time.Now().UnixNano() {
				t.Errorf("RX timestamp %d not between TX %d and now", m.KernelRX, keys[0])
			}
			if m.Dst != lo || m.TTL != 64 || m.TOS>>2 != 46 || from.Addr() != lo {
				t.Errorf("meta %+v from %v: want dst %v, TTL 64, DSCP 46", m, from, lo)
			}
		})
	}
}

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
