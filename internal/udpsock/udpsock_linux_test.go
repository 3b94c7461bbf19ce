//go:build linux && !llama_portable

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

// TestDrainTxTimestampsInBatches: more timestamps than one recvmmsg(2)
// reads come out in order, exactly limit of them when limit is set, and
// the rest on the next drain.
func TestDrainTxTimestampsInBatches(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := Listen("udp4", lo, Options{TxTimestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen("udp4", lo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dst := b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	const n, limit = 3*txBatchSize + 5, txBatchSize + 7
	for range n {
		if _, err := a.WriteToUDPAddrPort([]byte("probe"), dst); err != nil {
			t.Fatal(err)
		}
	}
	var keys []uint32
	collect := func(k uint32, _ int64) { keys = append(keys, k) }
	if err := a.DrainTxTimestamps(collect, limit); err != nil {
		t.Fatal(err)
	}
	if len(keys) != limit {
		t.Fatalf("%d timestamps read with limit %d", len(keys), limit)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(keys) < n && time.Now().Before(deadline) {
		if err := a.DrainTxTimestamps(collect, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range keys {
		if k != uint32(i) {
			t.Fatalf("timestamp %d has key %d; %d read of %d", i, k, len(keys), n)
		}
	}
	if len(keys) != n {
		t.Fatalf("%d timestamps, want %d", len(keys), n)
	}
}

// TestGROSize: a UDP GSO train reaches a UDP_GRO socket on loopback as one
// buffer whose control messages give the size of each datagram.
func TestGROSize(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := Listen("udp4", lo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen("udp4", lo, Options{GRO: true, RecvMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.GRO() {
		t.Fatal("UDP_GRO refused")
	}
	dst := b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	train := make([]byte, 3*100+40)
	if _, _, err := a.WriteMsgUDPAddrPort(train, AppendSegmentSize(nil, 100), dst); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 2048), make([]byte, OOBSize)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, _, m, err := b.ReadMeta(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if got != len(train) || m.GROSize != 100 || m.TTL != 64 {
		t.Fatalf("read %d octets, GRO size %d, TTL %d; want %d, 100 and 64", got, m.GROSize, m.TTL, len(train))
	}
}

// TestRecvTOSOnly: RecvTOS asks for the traffic class and nothing else.
func TestRecvTOSOnly(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			if network == "udp6" {
				lo = netip.IPv6Loopback()
			}
			a, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{TOS: 46 << 2})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{RecvTOS: true})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			dst := b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
			if _, err := a.WriteToUDPAddrPort([]byte("probe"), dst); err != nil {
				t.Fatal(err)
			}
			b.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _, m, err := b.ReadMeta(make([]byte, 64), make([]byte, OOBSize))
			if err != nil {
				t.Fatal(err)
			}
			if m.TOS>>2 != 46 || m.TTL != -1 || m.Dst.IsValid() {
				t.Fatalf("meta %+v: want DSCP 46 and neither TTL nor destination", m)
			}
		})
	}
}
