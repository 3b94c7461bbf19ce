package prober

import (
	"context"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// TestRoundsOnlyWithKernelTimestamps: replies are read once per scheduler
// round only when their kernel receive timestamps say when they came.
// Without them (UserTimestamps, or a socket layer that has none) a reply
// is timed when it is read, so each must be read as it comes: otherwise
// every reply of a round but the first would wait up to a tick.
func TestRoundsOnlyWithKernelTimestamps(t *testing.T) {
	for _, user := range []bool{false, true} {
		mgr := NewManager(Options{UserTimestamps: user}, nil, discard)
		perRound := mgr.rounds != nil
		mgr.Close()
		if want := udpsock.KernelTimestamps && !user; perRound != want {
			t.Errorf("UserTimestamps %v, kernel timestamps available %v: replies read once per round %v, want %v",
				user, udpsock.KernelTimestamps, perRound, want)
		}
	}
}

// TestTimestampsReportedAreThoseUsed: a session on loopback reports kernel
// timestamps exactly where the socket layer has them, and its RTTs stay
// far below the probe interval either way.
func TestTimestampsReportedAreThoseUsed(t *testing.T) {
	dst := startReflector(t, "127.0.0.1:0")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := fastModule()
	m.Interval = 100 * time.Millisecond
	s, _, err := mgr.Get(context.Background(), "timestamps", m, dst.String())
	if err != nil {
		t.Fatal(err)
	}
	var sn Snapshot
	testlab.WaitFor(t, 30*time.Second, "20 answered probes", func() bool {
		sn = s.Snapshot()
		return sn.RTTCount >= 20
	})
	if sn.KernelTimestamps != udpsock.KernelTimestamps {
		t.Errorf("last reply timed with kernel timestamps: %v; the socket layer has them: %v", sn.KernelTimestamps, udpsock.KernelTimestamps)
	}
	if p50 := time.Duration(sn.Quantiles[0.5] * 1e9); p50 > m.Interval/4 {
		t.Errorf("loopback RTT p50 %v with probes every %v", p50, m.Interval)
	}
}
