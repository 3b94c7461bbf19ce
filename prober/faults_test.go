//go:build linux

package prober

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// TestReflectorRestartShowsLossThenRecovery stops the reflector under a
// running session and starts it again on the same port: the session
// counts the outage as loss and then recovers, without restarting.
func TestReflectorRestartShowsLossThenRecovery(t *testing.T) {
	r, err := reflector.New(reflector.Config{ListenAddresses: []string{"127.0.0.1:0"}}, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	r.Serve()
	addr := r.Addrs()[0]
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	s, _, err := mgr.Get(context.Background(), "restart", fastModule(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 10*time.Second, "replies", func() bool { return s.Snapshot().Received >= 20 })
	r.Close()
	testlab.WaitFor(t, 10*time.Second, "loss while the reflector is down", func() bool { return s.Snapshot().Lost >= 20 })
	r2, err := reflector.New(reflector.Config{ListenAddresses: []string{addr.String()}}, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	r2.Serve()
	defer r2.Close()
	before := s.Snapshot()
	testlab.WaitFor(t, 10*time.Second, "recovery", func() bool { return s.Snapshot().Received >= before.Received+20 })
	if ss := mgr.Sessions(); len(ss) != 1 || ss[0] != s {
		t.Fatal("the session was replaced")
	}
}

// TestSendErrorsCountedAndSessionGoesOn probes, from a namespace, a
// network it has no route to (ENETUNREACH) and one routed as unreachable
// (EHOSTUNREACH): every send error is counted, each probe is lost, and the
// sessions keep probing.
func TestSendErrorsCountedAndSessionGoesOn(t *testing.T) {
	netns.Require(t)
	ns := netns.New(t)
	other := netns.New(t)
	netns.Link(t, ns, "198.18.5.1/30", other, "198.18.5.2/30")
	ns.Run(t, "ip", "route", "add", "unreachable", "198.18.6.0/24")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	var sessions []*Session
	for _, target := range []string{"198.19.7.1", "198.18.6.1"} {
		err := ns.Do(func() error {
			s, _, err := mgr.Get(context.Background(), "errs", fastModule(), target)
			sessions = append(sessions, s)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	testlab.WaitFor(t, 10*time.Second, "100 probes on each target", func() bool {
		return sessions[0].Snapshot().Sent >= 100 && sessions[1].Snapshot().Sent >= 100
	})
	errs := testutil.ToFloat64(mgr.metrics.sendErrors.WithLabelValues("errs"))
	var sent, lost uint64
	for _, s := range sessions {
		sn := s.Snapshot()
		sent, lost = sent+sn.Sent, lost+sn.Lost+uint64(sn.InFlight)
	}
	// Probes sent after reading the counter may still be failing: bound it.
	if errs < 200 || uint64(errs) > sent || lost != sent {
		t.Fatalf("send errors %v, sent %d, lost or in flight %d: want every probe an error and lost", errs, sent, lost)
	}
}
