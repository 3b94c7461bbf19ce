package histogram

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

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
			hs := make([]*Histogram, n)
			for i := range hs {
				hs[i] = New(desc, upper, time.Now())
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				hs[i%n].Observe(values[i%len(values)])
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

// BenchmarkHistogramMetric measures what a scrape costs per histogram:
// its state taken under the session's lock and written as the
// exposition's protobuf (classic and native buckets), for RTTs of
// 20µs–20ms.
func BenchmarkHistogramMetric(b *testing.B) {
	h := New(prometheus.NewDesc("llama_probe_rtt_seconds", "RTT.", nil, nil), prometheus.ExponentialBuckets(50e-6, 2, 16), time.Unix(1700000000, 0))
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		h.Observe(20e-6 * math.Pow(1000, rng.Float64()))
	}
	b.ReportAllocs()
	for b.Loop() {
		var m dto.Metric
		if err := h.Metric().Write(&m); err != nil {
			b.Fatal(err)
		}
	}
}
