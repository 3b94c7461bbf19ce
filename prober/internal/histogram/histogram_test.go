package histogram

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// TestHistogramMatchesClientGolang feeds the same values to histogram and
// to client_golang's Histogram with the options sessions used to create
// it with, and compares what both expose: count, sum, classic buckets,
// schema, zero bucket and native buckets. "wide" spans more octaves than
// 160 buckets of schema 3 hold, so both must lower the resolution alike.
func TestHistogramMatchesClientGolang(t *testing.T) {
	for _, tc := range []struct {
		name         string
		upper        []float64
		lo, hi       float64 // log-uniform range of the values
		wantSchema   int32
		observations int
	}{
		{"rtt", prometheus.ExponentialBuckets(50e-6, 2, 16), 20e-6, 5e-3, nativeSchema, 5000},
		{"dwell", dwellBuckets, 1e-7, 1e-3, nativeSchema, 5000},
		{"wide", prometheus.DefBuckets, 1e-12, 1e6, 1, 20000},
		// Few values over 40 octaves: no halving, most keys beyond the
		// 160 dense buckets.
		{"sparse", prometheus.DefBuckets, 1e-9, 1e3, nativeSchema, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			desc := prometheus.NewDesc("h_seconds", "help", nil, nil)
			created := time.Unix(1700000000, 0)
			ours := New(desc, tc.upper, created)
			ref := prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "h_seconds", Help: "help", Buckets: tc.upper,
				NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
				NativeHistogramMinResetDuration: time.Hour,
			})
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range tc.observations {
				v := tc.lo * math.Pow(tc.hi/tc.lo, rng.Float64())
				if i%1000 == 0 {
					v = tc.upper[i/1000%len(tc.upper)] // exactly on a classic bound
				}
				ours.Observe(v)
				ref.Observe(v)
			}
			ours.Observe(0)
			ref.Observe(0)
			if len(ours.dense) > maxDense {
				t.Errorf("%d dense buckets, more than %d", len(ours.dense), maxDense)
			}
			var got, want dto.Metric
			metric := ours.Metric()
			if err := metric.Write(&got); err != nil {
				t.Fatal(err)
			}
			// What a scrape took must not change with later observations.
			before := proto.Clone(got.Histogram)
			ours.Observe(tc.lo)
			ours.Observe(tc.hi)
			var again dto.Metric
			if err := metric.Write(&again); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(before, again.Histogram) {
				t.Fatalf("the metric changed with later observations:\n before %v\n  after %v", before, again.Histogram)
			}
			if err := ref.Write(&want); err != nil {
				t.Fatal(err)
			}
			g, w := got.Histogram, want.Histogram
			if g.GetSchema() != tc.wantSchema {
				t.Errorf("schema %d, want %d", g.GetSchema(), tc.wantSchema)
			}
			if !time.Unix(g.GetCreatedTimestamp().GetSeconds(), 0).Equal(created) {
				t.Errorf("created %v, want %v", g.GetCreatedTimestamp(), created)
			}
			// The reference's created time is its construction time.
			g.CreatedTimestamp, w.CreatedTimestamp = nil, nil
			if !proto.Equal(g, w) {
				t.Fatalf("histograms differ:\n ours %v\n  ref %v", g, w)
			}
			if len(g.Bucket) != len(tc.upper) || len(g.PositiveSpan) == 0 {
				t.Fatalf("%d classic buckets, %d native spans: both kinds must be exposed", len(g.Bucket), len(g.PositiveSpan))
			}
		})
	}
}

// An empty histogram is exposed as client_golang exposes one: a native
// histogram with no buckets and a zero count of 0.
func TestHistogramEmpty(t *testing.T) {
	ours := New(prometheus.NewDesc("h_seconds", "help", nil, nil), dwellBuckets, time.Unix(1700000000, 0))
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "h_seconds", Help: "help", Buckets: dwellBuckets,
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
	})
	var got, want dto.Metric
	if err := ours.Metric().Write(&got); err != nil {
		t.Fatal(err)
	}
	if err := ref.Write(&want); err != nil {
		t.Fatal(err)
	}
	got.Histogram.CreatedTimestamp, want.Histogram.CreatedTimestamp = nil, nil
	if !proto.Equal(got.Histogram, want.Histogram) {
		t.Fatalf("empty histograms differ:\n ours %v\n  ref %v", got.Histogram, want.Histogram)
	}
}

func TestNativeKeyPowersOfTwo(t *testing.T) {
	// 2^k is the upper bound of bucket k*2^schema at every schema >= 0 ...
	for _, schema := range []int32{3, 2, 1, 0} {
		for k := -20; k <= 20; k++ {
			if got, want := nativeKey(math.Ldexp(1, k), schema), k<<schema; got != want {
				t.Errorf("schema %d: key of 2^%d is %d, want %d", schema, k, got, want)
			}
		}
	}
	// ... and of bucket ceil(k/2^-schema) below 0.
	if got := nativeKey(8, -1); got != 2 {
		t.Errorf("schema -1: key of 8 is %d, want 2", got)
	}
	if got := nativeKey(math.Inf(1), 3); got != math.MaxInt32 {
		t.Errorf("key of +Inf is %d", got)
	}
}

// dwellBuckets are the reflector dwell histogram's classic buckets, 1µs to ~1s.
var dwellBuckets = prometheus.ExponentialBuckets(1e-6, 4, 11)
