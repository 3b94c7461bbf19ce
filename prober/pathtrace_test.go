package prober

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
)

// traceModule is fastModule with path tracing every second, up to 4 hops.
func traceModule(prober string, flows int) *config.Module {
	m := fastModule()
	m.Prober, m.Flows = prober, flows
	if prober == config.ProberLLAMA {
		m.Port, m.PacketSize = config.DefaultPortLLAMA, config.DefaultPacketSizeLLAMA
	}
	m.PathTrace = &config.PathTrace{Interval: time.Second, MaxHops: 4, OnLoss: true}
	return m
}

// On loopback the reflector is the first hop: every flow's trace reaches
// it with TTL 1, its replies go to the tracer and not to the session (no
// unmatched replies, no effect on the window), and /probe serves the path
// series.
func TestPathTraceLoopback(t *testing.T) {
	if !udpsock.ControlMessages {
		t.Skip("path tracing reads ICMP errors from the error queue of the Linux socket layer, which this build (llama_portable) does not use")
	}
	for _, prober := range []string{config.ProberSTAMP, config.ProberLLAMA} {
		t.Run(prober, func(t *testing.T) {
			dst := startReflector(t, "127.0.0.1:0")
			reg := prometheus.NewRegistry()
			mgr := NewManager(Options{}, reg, discard)
			defer mgr.Close()
			m := traceModule(prober, 2)
			s, _, err := mgr.Get(context.Background(), "trace", m, dst.String())
			if err != nil {
				t.Fatal(err)
			}
			testlab.WaitFor(t, 20*time.Second, "both flows traced twice", func() bool {
				for _, v := range s.pathViews(ptr(s.Snapshot())) {
					if v.Done < 2 {
						return false
					}
				}
				return true
			})
			sn := s.Snapshot()
			for _, v := range s.pathViews(&sn) {
				if v.Length() != 1 || v.Hops[0].Addr != dst.Addr() || v.Hops[0].Answered&3 != 3 || v.Changes != 0 {
					t.Errorf("flow %d: %d hops, first %v (answers %b), changes %d; want the reflector at TTL 1",
						v.Port, v.Length(), v.Hops[0].Addr, v.Hops[0].Answered, v.Changes)
				}
			}
			if sent, answered := s.paths.Counts(); sent < 4 || answered != sent {
				t.Errorf("trace probes: %d sent, %d answered; want all answered", sent, answered)
			}
			if sn.Lost != 0 || sn.Late != 0 || sn.Duplicated != 0 || sn.Received+uint64(sn.InFlight) != sn.Sent {
				t.Errorf("trace probes disturbed the session: %+v", sn.Counters)
			}
			if u := testutil.ToFloat64(mgr.metrics.unmatched.WithLabelValues("trace")); u != 0 {
				t.Errorf("%v unmatched replies", u)
			}
			body := scrape(t, mgr, m, dst.String(), "")
			for _, want := range []string{
				"llama_probe_flow_path_hops{flow=", "llama_probe_flow_path_changes_total{flow=",
				`llama_probe_path_hop_info{address="127.0.0.1",flow=`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("/probe lacks %s", want)
				}
			}
			if strings.Contains(body, "llama_probe_path_suspect_link_info") {
				t.Error("a suspect link without loss")
			}
			if dbg := scrape(t, mgr, m, dst.String(), "&debug=true"); !strings.Contains(dbg, "Path trace (interval 1s, max_hops 4, on_loss true)") ||
				!strings.Contains(dbg, "Suspect links: none") {
				t.Errorf("debug page lacks the paths:\n%s", dbg)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// scrape serves /probe for target with module m through the handler.
func scrape(t *testing.T, mgr *Manager, m *config.Module, target, extra string) string {
	t.Helper()
	cfg := &config.Config{Modules: map[string]*config.Module{"trace": m}}
	srv := httptest.NewServer(&Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard})
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/probe?module=trace&target=" + target + extra)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// FuzzTraceQuote: every tracing protocol reads the sequence number of its
// own probes back from the first 16 octets of their payload, as an ICMP
// error quotes them, and never panics on any quote.
func FuzzTraceQuote(f *testing.F) {
	f.Add([]byte{}, uint32(traceSeqFlag|7), uint8(16))
	f.Add([]byte{0x0a, 10, 0, 1}, uint32(1), uint8(4))
	f.Fuzz(func(t *testing.T, raw []byte, seq uint32, n uint8) {
		for name, p := range Probers {
			if !p.Spec.PathTrace {
				continue
			}
			m := decodeModule(t, name)
			q, ok := p.New(m).(traceQuoter)
			if !ok {
				t.Fatalf("%s traces but cannot read quoted probes", name)
			}
			q.quotedSeq(raw) // must not panic
			out, err := p.New(m).Encode(make([]byte, m.PacketSize), &Probe{SSID: 9, Seq: seq})
			if err != nil {
				t.Fatal(err)
			}
			quote := out[:min(int(n), 16, len(out))]
			got, ok := q.quotedSeq(quote)
			if need := map[string]int{config.ProberSTAMP: 4, config.ProberLLAMA: 8}[name]; len(quote) >= need && (!ok || got != seq) {
				t.Errorf("%s: quote of %d octets read as %d, %v; want %d", name, len(quote), got, ok, seq)
			}
		}
	})
}
