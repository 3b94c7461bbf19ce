package prober

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// TestAuthenticatedMode runs STAMP authenticated mode (RFC 8762 §4.2.2) end
// to end: the right key answers every probe, a wrong key or no key gets no
// answer and counts as the reflector's bad data.
func TestAuthenticatedMode(t *testing.T) {
	reg := prometheus.NewRegistry()
	refl, err := reflector.New(reflector.Config{ListenAddresses: []string{"127.0.0.1:0"}, AuthKey: []byte("fleet key")}, reg, discard)
	if err != nil {
		t.Fatal(err)
	}
	refl.Serve()
	defer refl.Close()
	dst := refl.Addrs()[0].String()
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()

	good := fastModule()
	good.PacketSize, good.AuthKey = 112, []byte("fleet key")
	s, _, err := mgr.Get(context.Background(), "auth", good, dst)
	if err != nil {
		t.Fatal(err)
	}
	var sn Snapshot
	testlab.WaitFor(t, 20*time.Second, "100 decided authenticated probes", func() bool {
		sn = s.Snapshot()
		return sn.WindowSent >= 100
	})
	if sn.Lost != 0 || sn.Received < 100 {
		t.Fatalf("authenticated: received %d, lost %d", sn.Received, sn.Lost)
	}

	wrong := fastModule()
	wrong.PacketSize, wrong.AuthKey = 112, []byte("another key")
	plain := fastModule()
	plain.PacketSize = 112
	for name, m := range map[string]*config.Module{"wrong key": wrong, "no key": plain} {
		s, _, err := mgr.Get(context.Background(), name, m, dst)
		if err != nil {
			t.Fatal(err)
		}
		testlab.WaitFor(t, 20*time.Second, name+": 20 decided probes", func() bool {
			sn = s.Snapshot()
			return sn.WindowSent >= 20
		})
		if sn.Received != 0 || sn.WindowLost != sn.WindowSent {
			t.Errorf("%s: received %d, window lost %d of %d; want nothing answered", name, sn.Received, sn.WindowLost, sn.WindowSent)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "llama_reflector_packets_bad_data_total"); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "llama_reflector_packets_bad_data_total" && mf.GetMetric()[0].GetCounter().GetValue() < 40 {
			t.Errorf("bad_data_total %v, want the unauthenticated probes counted", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}
