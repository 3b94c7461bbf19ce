package prober

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// TestThousandSessionsOneReflector runs 1,000 concurrent sessions (one per
// loopback address, 10 probes/s each) against one reflector bound to the
// wildcard address: every session must report loss 0, and for every
// session sent = received + lost + in flight.
func TestThousandSessionsOneReflector(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 probes/s for several seconds")
	}
	if !udpsock.ControlMessages {
		t.Skip("the portable socket layer has no IP_PKTINFO: the wildcard reflector answers probes to 127.1.x.y from 127.0.0.1, which match no session")
	}
	refl := startReflector(t, "0.0.0.0:0")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := fastModule()
	m.Interval, m.Timeout, m.Window = 100*time.Millisecond, time.Second, 30*time.Second
	sessions := make([]*Session, 0, 1000)
	for i := range 1000 {
		target := fmt.Sprintf("127.1.%d.%d:%d", i/250, 1+i%250, refl.Port())
		s, _, err := mgr.Get(context.Background(), "scale", m, target)
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	testlab.WaitFor(t, 60*time.Second, "20 decided probes in every session", func() bool {
		for _, s := range sessions {
			if s.Snapshot().WindowSent < 20 {
				return false
			}
		}
		return true
	})
	var sent, lost uint64
	for _, s := range sessions {
		sn := s.Snapshot()
		sent += sn.Sent
		lost += sn.Lost
		if sn.Lost != 0 || sn.WindowLost != 0 {
			t.Errorf("%s: lost %d (window %d of %d)", s.Target, sn.Lost, sn.WindowLost, sn.WindowSent)
		}
		if sn.Sent != sn.Received+sn.Lost+uint64(sn.InFlight) {
			t.Errorf("%s: sent %d != received %d + lost %d + in flight %d", s.Target, sn.Sent, sn.Received, sn.Lost, sn.InFlight)
		}
	}
	t.Logf("1000 sessions: %d probes sent, %d lost", sent, lost)
}
