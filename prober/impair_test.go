//go:build linux

package prober

import (
	"context"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/impair"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// TestLossAndDelayThroughRelay probes a reflector through a UDP impairment
// relay (10% loss and 5ms delay in each direction) and, at the same time,
// through an unimpaired relay as the baseline. Over >= 2000 probes the
// window loss ratio must be 1 - 0.9² = 0.19 ± 0.03 and the window p50 RTT
// within 1ms of the baseline p50 + 10ms.
func TestLossAndDelayThroughRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ~10 s of probing")
	}
	refl := startReflector(t, "127.0.0.1:0")
	none := impair.Impairment{DSCP: -1}
	lossy := impair.Impairment{Loss: 0.10, Delay: 5 * time.Millisecond, DSCP: -1}
	newRelay := func(fwd, back impair.Impairment, seed int64) string {
		r, err := impair.New("127.0.0.1:0", refl, fwd, back, seed)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r.Addr().String()
	}
	impaired := newRelay(lossy, lossy, 1)
	baseline := newRelay(none, none, 2)

	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := fastModule()
	m.Interval, m.Window = 3*time.Millisecond, 30*time.Second
	si, _, err := mgr.Get(context.Background(), "relay", m, impaired)
	if err != nil {
		t.Fatal(err)
	}
	sb, _, err := mgr.Get(context.Background(), "relay", m, baseline)
	if err != nil {
		t.Fatal(err)
	}
	var sn Snapshot
	testlab.WaitFor(t, 60*time.Second, "2000 decided probes through the impaired relay", func() bool {
		sn = si.Snapshot()
		return sn.WindowSent >= 2000
	})
	base := sb.Snapshot()
	t.Logf("impaired: window %d/%d lost (ratio %.4f), p50 %.3fms; baseline: p50 %.3fms over %d probes",
		sn.WindowLost, sn.WindowSent, sn.LossRatio, sn.Quantiles[0.5]*1e3, base.Quantiles[0.5]*1e3, base.RTTCount)
	if math.Abs(sn.LossRatio-0.19) > 0.03 {
		t.Errorf("window loss ratio %.4f, want 0.19 ± 0.03", sn.LossRatio)
	}
	if base.LossRatio != 0 {
		t.Errorf("baseline loss ratio %v, want 0", base.LossRatio)
	}
	if d := sn.Quantiles[0.5] - (base.Quantiles[0.5] + 0.010); math.Abs(d) > 0.001 {
		t.Errorf("impaired p50 %.3fms is %.3fms away from baseline p50 + 10ms (%.3fms)",
			sn.Quantiles[0.5]*1e3, d*1e3, (base.Quantiles[0.5]+0.010)*1e3)
	}
	if sn.Sent != sn.Received+sn.Lost+uint64(sn.InFlight) {
		t.Errorf("sent %d != received %d + lost %d + in flight %d", sn.Sent, sn.Received, sn.Lost, sn.InFlight)
	}
}

// relayTo starts an impairment relay in front of refl, closed with the test.
func relayTo(t *testing.T, refl netip.AddrPort, fwd, back impair.Impairment, seed int64) *impair.Relay {
	t.Helper()
	r, err := impair.New("127.0.0.1:0", refl, fwd, back, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var clean = impair.Impairment{DSCP: -1}

// TestDirectionalLossThroughRelay loses 10% in one direction only; the
// stateful reflector's numbering must put it in that direction.
func TestDirectionalLossThroughRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ~15 s of probing")
	}
	refl := startReflector(t, "127.0.0.1:0")
	lossy := impair.Impairment{Loss: 0.10, DSCP: -1}
	for _, tc := range []struct {
		name      string
		fwd, back impair.Impairment
	}{
		{"forward", lossy, clean},
		{"backward", clean, lossy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay := relayTo(t, refl, tc.fwd, tc.back, 3)
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			m := fastModule()
			m.Interval, m.Window = 3*time.Millisecond, 30*time.Second
			s, _, err := mgr.Get(context.Background(), "dir", m, relay.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			var sn Snapshot
			testlab.WaitFor(t, 60*time.Second, "2000 decided probes", func() bool {
				sn = s.Snapshot()
				return sn.WindowSent >= 2000
			})
			fwd := float64(sn.WindowForwardLost) / float64(sn.WindowSent)
			back := float64(sn.WindowBackwardLost) / float64(sn.WindowSent)
			t.Logf("%s loss: window %d sent, forward %.4f, backward %.4f, unattributed %d; relay %+v / %+v",
				tc.name, sn.WindowSent, fwd, back, sn.WindowLost-sn.WindowForwardLost-sn.WindowBackwardLost, relay.Forward(), relay.Backward())
			lossyRatio, cleanRatio := fwd, back
			if tc.name == "backward" {
				lossyRatio, cleanRatio = back, fwd
			}
			if !sn.Stateful || math.Abs(lossyRatio-0.10) > 0.03 || cleanRatio > 0.01 {
				t.Errorf("stateful %v, %s loss ratio %.4f (want 0.10 ± 0.03), other direction %.4f (want <= 0.01)",
					sn.Stateful, tc.name, lossyRatio, cleanRatio)
			}
		})
	}
}

// TestDuplicatesAndReorderingCountedExactly has the relay duplicate, then
// reorder, replies; the session must count exactly what the relay did.
func TestDuplicatesAndReorderingCountedExactly(t *testing.T) {
	refl := startReflector(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name     string
		back     impair.Impairment
		count    func(*impair.Relay) uint64
		got      func(Snapshot) uint64
		kernelTS bool // the count needs kernel receive timestamps
	}{
		{"duplicate", impair.Impairment{Duplicate: 0.2, DSCP: -1},
			func(r *impair.Relay) uint64 { return r.Backward().Duplicated },
			func(s Snapshot) uint64 { return s.Duplicated }, false},
		{"reorder", impair.Impairment{Reorder: 0.2, DSCP: -1},
			// What left the relay out of order: held back by design, or
			// (rarely) overtaken between its reader goroutines.
			func(r *impair.Relay) uint64 { return r.Backward().OutOfOrder },
			func(s Snapshot) uint64 { return s.Reordered }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kernelTS && !udpsock.KernelTimestamps {
				// The relay releases a held reply microseconds after the
				// one that overtook it, to another flow socket: the order
				// in which two goroutines read them says nothing.
				t.Skip("no kernel receive timestamps on the portable socket layer: replies to different flow sockets microseconds apart cannot be ordered by their read times")
			}
			relay := relayTo(t, refl, clean, tc.back, 4)
			relay.SetSequence(func(b []byte) (uint32, bool) {
				var rp stamp.ReflectorPacket
				return rp.SenderSequence, rp.UnmarshalBinary(b) == nil
			})
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			s, _, err := mgr.Get(context.Background(), "dup", fastModule(), relay.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			testlab.WaitFor(t, 30*time.Second, "500 answered probes", func() bool { return s.Snapshot().Received >= 500 })
			relay.SetImpairment(clean, clean)
			var sn Snapshot
			deadline := time.Now().Add(10 * time.Second)
			for sn = s.Snapshot(); tc.got(sn) != tc.count(relay); sn = s.Snapshot() {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the session counted %d, the relay %d (received %d, lost %d)", tc.name, tc.got(sn), tc.count(relay), sn.Received, sn.Lost)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tc.got(sn) < 50 || sn.Lost != 0 || sn.Late != 0 {
				t.Fatalf("%s: %d counted, lost %d, late %d", tc.name, tc.got(sn), sn.Lost, sn.Late)
			}
			t.Logf("%s: relay %d, session %d", tc.name, tc.count(relay), tc.got(sn))
		})
	}
}

// TestKernelTimestampedRTTThroughDelay checks that kernel timestamps are
// used on loopback and that a fixed 5 ms delay each way shows as 10 ms
// (± 200 µs) above the RTT through an undelayed relay, comparing the
// minimum RTTs of 500 probes each.
func TestKernelTimestampedRTTThroughDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("an accuracy measurement: not under -short (nor -race)")
	}
	if !udpsock.KernelTimestamps {
		t.Skip("no kernel timestamps on the portable socket layer")
	}
	refl := startReflector(t, "127.0.0.1:0")
	delay := impair.Impairment{Delay: 5 * time.Millisecond, DSCP: -1}
	delayed := relayTo(t, refl, delay, delay, 5)
	plain := relayTo(t, refl, clean, clean, 6)
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := fastModule()
	m.Interval = 10 * time.Millisecond
	sd, _, err := mgr.Get(context.Background(), "ts", m, delayed.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sp, _, err := mgr.Get(context.Background(), "ts", m, plain.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var d, p Snapshot
	testlab.WaitFor(t, 30*time.Second, "500 answered probes on both", func() bool {
		d, p = sd.Snapshot(), sp.Snapshot()
		return d.RTTCount >= 500 && p.RTTCount >= 500
	})
	if !d.KernelTimestamps || !p.KernelTimestamps || d.TimestampFallbacks > d.Received/100 || p.TimestampFallbacks > p.Received/100 {
		t.Fatalf("kernel timestamps: delayed %v, plain %v; fallbacks %d of %d and %d of %d", d.KernelTimestamps, p.KernelTimestamps, d.TimestampFallbacks, d.Received, p.TimestampFallbacks, p.Received)
	}
	// The relay is never early but can be late when its goroutine waits
	// for a CPU, so its own lateness is best excluded at the minimum: the
	// probes it released on time.
	diff := d.RTTMin - p.RTTMin
	t.Logf("min delayed %.1fµs, plain %.1fµs, difference %.1fµs; p50 %.1fµs and %.1fµs",
		d.RTTMin*1e6, p.RTTMin*1e6, diff*1e6, d.Quantiles[0.5]*1e6, p.Quantiles[0.5]*1e6)
	if math.Abs(diff-0.010) > 200e-6 {
		t.Errorf("minimum RTT difference %.1fµs, want 10000 ± 200µs", diff*1e6)
	}
}

// TestDSCPRemarkingCaughtInItsDirection has the relay rewrite the DSCP of
// one direction only, then of none; the Class of Service TLV must show
// where.
func TestDSCPRemarkingCaughtInItsDirection(t *testing.T) {
	if !udpsock.ControlMessages {
		t.Skip("the portable socket layer reads no TOS: neither the reflector nor the prober sees a DSCP")
	}
	refl := startReflector(t, "127.0.0.1:0")
	keep := impair.Impairment{DSCP: 10} // the relay re-sends with AF11, as probed
	remark := impair.Impairment{DSCP: 0}
	for _, tc := range []struct {
		name              string
		fwd, back         impair.Impairment
		wantFwd, wantBack bool
	}{
		{"forward", remark, keep, true, false},
		{"backward", keep, remark, false, true},
		{"none", keep, keep, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay := relayTo(t, refl, tc.fwd, tc.back, 7)
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			m := fastModule()
			m.DSCP, m.PacketSize = 10, 64
			s, _, err := mgr.Get(context.Background(), "dscp", m, relay.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			var sn Snapshot
			testlab.WaitFor(t, 20*time.Second, "100 answered probes", func() bool {
				sn = s.Snapshot()
				return sn.Received >= 100
			})
			if got := sn.DSCPRemarkedForward > 0; got != tc.wantFwd || sn.DSCPRemarkedForward != 0 && sn.DSCPRemarkedForward != sn.Received {
				t.Errorf("forward remarked %d of %d replies, want all: %v", sn.DSCPRemarkedForward, sn.Received, tc.wantFwd)
			}
			if got := sn.DSCPRemarkedBackward > 0; got != tc.wantBack || sn.DSCPRemarkedBackward != 0 && sn.DSCPRemarkedBackward != sn.Received {
				t.Errorf("backward remarked %d of %d replies, want all: %v", sn.DSCPRemarkedBackward, sn.Received, tc.wantBack)
			}
		})
	}
}
