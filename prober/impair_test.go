package prober

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/impair"
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

	mgr := NewManager(0, nil, discard)
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
	waitFor(t, 60*time.Second, "2000 decided probes through the impaired relay", func() bool {
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
