package prober

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// BenchmarkSessionAccounting measures one probe's accounting: the send
// (sequence number, slot, window advance) and its reply (RTT, counters,
// histogram, reordering, direction).
func BenchmarkSessionAccounting(b *testing.B) {
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window = time.Millisecond, 100*time.Millisecond, 10*time.Second
	s := newSession("bench", &m, resolvedTarget{name: "t", host: "t", port: 862, dst: netip.MustParseAddrPort("198.18.0.2:862")}, 0)
	s.pool = &pool{ttl: [2]int{64, 64}}
	r := timedReply{senderTTL: 62, dscp: 0, dscp2: -1}
	now := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		now += int64(time.Millisecond)
		seq, _, _ := s.recordSend(now)
		r.seq, r.reflSeq, r.t4 = seq, seq, now+100_000
		s.onReply(&r)
	}
}

// BenchmarkSnapshot measures a scrape's summary of a window holding 10,000
// answered probes (interval 1ms, window 10s); its cost does not grow with
// the window.
func BenchmarkSnapshot(b *testing.B) {
	for _, window := range []time.Duration{time.Second, 10 * time.Second} {
		b.Run(window.String(), func(b *testing.B) {
			m := config.DefaultModule()
			m.Interval, m.Timeout, m.Window = time.Millisecond, 100*time.Millisecond, window
			s := newSession("bench", &m, resolvedTarget{name: "t", host: "t", port: 862, dst: netip.MustParseAddrPort("198.18.0.2:862")}, 0)
			now := int64(0)
			n := int(window / m.Interval)
			for i := range n + 200 {
				now = int64(i) * int64(time.Millisecond)
				seq, _, _ := s.recordSend(now)
				s.onReply(&timedReply{seq: seq, reflSeq: seq, t4: now + int64(50_000+i%1000), senderTTL: -1, dscp: -1, dscp2: -1})
			}
			if sn := s.snapshot(now); sn.RTTCount < n-10 {
				b.Fatalf("window holds %d samples, want about %d", sn.RTTCount, n)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.snapshot(now)
			}
		})
	}
}

// BenchmarkProbeHandler measures one /probe scrape of a live session
// (loopback reflector, 8 flows): the session's summary, the per-scrape
// registry and the text exposition, with and without gzip.
func BenchmarkProbeHandler(b *testing.B) {
	dst := startReflector(b, "127.0.0.1:0").String()
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	mod := fastModule()
	cfg := &config.Config{Modules: map[string]*config.Module{"bench": mod}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	url := "/probe?module=bench&target=" + dst
	s, _, err := mgr.Get(context.Background(), "bench", mod, dst)
	if err != nil {
		b.Fatal(err)
	}
	testlab.WaitFor(b, 10*time.Second, "300 replies from the loopback reflector", func() bool { return s.Snapshot().Received >= 300 })
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			req := httptest.NewRequest("GET", url, nil)
			req.Header.Set("Accept-Encoding", enc)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
