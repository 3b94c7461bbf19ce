package prober

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/llama-exporter/llama_exporter/config"
)

// BenchmarkSessionAccounting measures one probe's accounting: the send
// (sequence number, slot, window advance) and its reply (RTT, counters,
// histogram, reordering, direction).
func BenchmarkSessionAccounting(b *testing.B) {
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window = time.Millisecond, 100*time.Millisecond, 10*time.Second
	s := newSession("bench", &m, "t", "t", 862, netip.MustParseAddrPort("198.18.0.2:862"), 0)
	s.pool = &pool{ttl: [2]int{64, 64}}
	r := reply{senderTTL: 62, dscp: 0, dscp2: -1}
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
			s := newSession("bench", &m, "t", "t", 862, netip.MustParseAddrPort("198.18.0.2:862"), 0)
			now := int64(0)
			n := int(window / m.Interval)
			for i := range n + 200 {
				now = int64(i) * int64(time.Millisecond)
				seq, _, _ := s.recordSend(now)
				s.onReply(&reply{seq: seq, reflSeq: seq, t4: now + int64(50_000+i%1000), senderTTL: -1, dscp: -1, dscp2: -1})
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

// BenchmarkHistogramObserve compares one RTT observation into the session
// histogram with client_golang's Histogram of the same options, round robin
// over 10,000 histograms as the reply path of 10,000 sessions does (so the
// histograms are mostly out of the CPU caches).
func BenchmarkHistogramObserve(b *testing.B) {
	const n = 10000
	upper := prometheus.ExponentialBuckets(50e-6, 2, 16)
	desc := prometheus.NewDesc("h_seconds", "help", nil, nil)
	// narrow: RTTs of a quiet path, 30 µs .. 300 µs; wide: of a loaded host
	// or a long path, 20 µs .. 20 ms, 80 native buckets.
	for _, r := range []struct {
		name   string
		lo, hi float64
	}{{"narrow", 30e-6, 300e-6}, {"wide", 20e-6, 20e-3}} {
		values := make([]float64, 4096)
		rng := rand.New(rand.NewPCG(5, 6))
		for i := range values {
			values[i] = r.lo * math.Pow(r.hi/r.lo, rng.Float64())
		}
		b.Run(r.name+"/session", func(b *testing.B) {
			hs := make([]*histogram, n)
			for i := range hs {
				hs[i] = newHistogram(desc, upper, time.Now())
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				hs[i%n].observe(values[i%len(values)])
				i++
			}
		})
		b.Run(r.name+"/client_golang", func(b *testing.B) {
			hs := make([]prometheus.Histogram, n)
			for i := range hs {
				hs[i] = prometheus.NewHistogram(prometheus.HistogramOpts{
					Name: "h_seconds", Help: "help", Buckets: upper,
					NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
					NativeHistogramMinResetDuration: time.Hour,
				})
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				hs[i%n].Observe(values[i%len(values)])
				i++
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
	waitFor(b, 10*time.Second, "300 replies from the loopback reflector", func() bool { return s.Snapshot().Received >= 300 })
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

// BenchmarkHistogramMetric measures what a scrape costs per histogram:
// its state taken under the session's lock and written as the
// exposition's protobuf (classic and native buckets), for RTTs of
// 20µs–20ms.
func BenchmarkHistogramMetric(b *testing.B) {
	h := newHistogram(descRTT, prometheus.ExponentialBuckets(50e-6, 2, 16), time.Unix(1700000000, 0))
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		h.observe(20e-6 * math.Pow(1000, rng.Float64()))
	}
	b.ReportAllocs()
	for b.Loop() {
		var m dto.Metric
		if err := h.metric().Write(&m); err != nil {
			b.Fatal(err)
		}
	}
}
