// Package histogram is a session's RTT (or dwell) histogram: classic
// buckets and a Prometheus native histogram, exposed as one metric, guarded
// by its owner's lock instead of atomics.
package histogram

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Native histogram parameters of the per-session histograms: the layout
// that client_golang picks for NativeHistogramBucketFactor 1.1,
// NativeHistogramMaxBucketNumber 160 and the default zero threshold.
const (
	nativeSchema        = 3 // bucket factor 2^(1/8) ≈ 1.09
	nativeMaxBuckets    = 160
	nativeMinSchema     = -4
	nativeZeroThreshold = prometheus.DefNativeHistogramZeroThreshold
)

// nativeBounds[s] are the fraction bounds of schema s > 0 (up to
// nativeSchema): 2^(j/2^s - 1) for j < 2^s, as math.Frexp returns
// fractions in [0.5, 1).
var nativeBounds = func() [nativeSchema + 1][]float64 {
	var b [nativeSchema + 1][]float64
	for s := 1; s <= nativeSchema; s++ {
		n := 1 << s
		b[s] = make([]float64, n)
		for j := range n {
			b[s][j] = math.Exp2(float64(j)/float64(n) - 1)
		}
	}
	return b
}()

// Histogram is one session's RTT (or dwell) histogram: classic buckets and
// a native histogram, exposed as one Prometheus histogram. It does what
// client_golang's Histogram does with the same options, but it is guarded by
// the session's lock, which the reply path holds anyway: an observation is
// plain increments in a short slice, where the lock-free histogram pays
// atomics and a sync.Map lookup, the largest user-space cost of a reply at
// 10,000 sessions. It never resets; when the native histogram would need
// more than nativeMaxBuckets buckets, it halves its resolution, as
// client_golang does within NativeHistogramMinResetDuration.
// Observations must not be negative.
type Histogram struct {
	desc   *prometheus.Desc
	upper  []float64 // classic bucket upper bounds, ascending, without +Inf
	counts []uint64  // observations per classic bucket, the last one +Inf
	count  uint64
	sum    float64 // seconds
	schema int32
	zero   uint64 // observations <= nativeZeroThreshold
	// Native buckets: bucket lo+i in dense[i], a slice that grows to
	// cover the keys observed as long as it spans at most maxDense
	// buckets; keys beyond that are in far. A session's values cluster,
	// so an observation is an increment in a short slice, not a map
	// update.
	lo      int
	dense   []int64
	far     map[int]int64 // nil until a key falls outside dense
	buckets int           // populated native buckets, dense and far
	created time.Time
	// inline backs dense until it outgrows it: the counts of a narrow
	// distribution share the struct's cache lines.
	inline [firstDense]int64
}

// maxDense bounds the dense native buckets: 20 octaves at schema 3, 1 µs to
// 1 s, in 1,280 octets. They start as 32 buckets (4 octaves) around the
// first value.
const (
	maxDense   = 160
	firstDense = 32
)

// New returns an empty histogram exposed as desc, which must have no
// labels; upper are the classic buckets' upper bounds in seconds,
// ascending, without +Inf; created is the histogram's created timestamp.
func New(desc *prometheus.Desc, upper []float64, created time.Time) *Histogram {
	return &Histogram{
		desc: desc, upper: upper, counts: make([]uint64, len(upper)+1),
		schema: nativeSchema, created: created,
	}
}

// Observe adds one value in seconds, 0 or more. It allocates only when a
// value falls far from those before it.
func (h *Histogram) Observe(v float64) {
	h.counts[sort.SearchFloat64s(h.upper, v)]++ // upper bounds are inclusive
	h.count++
	h.sum += v
	if v <= nativeZeroThreshold {
		h.zero++
		return
	}
	h.add(nativeKey(v, h.schema), 1)
	for h.buckets > nativeMaxBuckets && h.schema > nativeMinSchema {
		h.halveResolution()
	}
}

// add counts n > 0 observations in native bucket k.
func (h *Histogram) add(k int, n int64) {
	var c *int64
	if i := k - h.lo; i >= 0 && i < len(h.dense) {
		c = &h.dense[i]
	} else if h.grow(k) {
		c = &h.dense[k-h.lo]
	} else {
		if h.far == nil {
			h.far = make(map[int]int64)
		}
		if h.far[k] == 0 {
			h.buckets++
		}
		h.far[k] += n
		return
	}
	if *c == 0 {
		h.buckets++
	}
	*c += n
}

// grow widens dense to cover key k, with room to grow further the same
// way, unless it would span more than maxDense buckets; it reports whether
// k is now in dense. dense only grows, its low end down and its high end
// up, so a key it cannot reach now it never reaches: far and dense never
// hold the same key.
func (h *Histogram) grow(k int) bool {
	if h.dense == nil {
		h.lo, h.dense = k-firstDense/2, h.inline[:]
		return true
	}
	lo, hi := h.lo, h.lo+len(h.dense)
	if k < lo {
		lo = max(min(k, lo-len(h.dense)), hi-maxDense)
	} else {
		hi = min(max(k+1, hi+len(h.dense)), lo+maxDense)
	}
	if k < lo || k >= hi {
		return false
	}
	d := make([]int64, hi-lo)
	copy(d[h.lo-lo:], h.dense)
	h.lo, h.dense = lo, d
	return true
}

// nativeBuckets returns every populated native bucket, index to count.
func (h *Histogram) nativeBuckets() map[int]int64 {
	m := make(map[int]int64, h.buckets)
	for k, n := range h.far {
		m[k] = n
	}
	for i, n := range h.dense {
		if n != 0 {
			m[h.lo+i] = n
		}
	}
	return m
}

// nativeKey returns the index of the native bucket of schema schema that
// holds v > 0: bucket i covers (2^((i-1)/2^schema), 2^(i/2^schema)].
func nativeKey(v float64, schema int32) int {
	if math.IsInf(v, 1) {
		return math.MaxInt32
	}
	frac, exp := math.Frexp(v)
	if schema > 0 {
		b := nativeBounds[schema]
		return sort.SearchFloat64s(b, frac) + (exp-1)*len(b)
	}
	key := exp
	if frac == 0.5 {
		key-- // a power of two is the upper bound of the bucket below
	}
	offset := (1 << -schema) - 1
	return (key + offset) >> -schema
}

// Count returns the number of observations and their sum in seconds.
func (h *Histogram) Count() (n uint64, sum float64) { return h.count, h.sum }

// halveResolution merges pairs of native buckets: bucket i of the current
// schema lies in bucket ceil(i/2) of the next coarser one.
func (h *Histogram) halveResolution() {
	merged := make(map[int]int64, h.buckets/2+1)
	for k, n := range h.nativeBuckets() {
		merged[ceilHalf(k)] += n
	}
	keys := make([]int, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	// Dense again around the old centre, then the keys in order.
	centre := ceilHalf(h.lo + len(h.dense)/2)
	if len(h.dense) == len(h.inline) {
		clear(h.inline[:])
		h.dense = h.inline[:]
	} else {
		h.dense = make([]int64, len(h.dense))
	}
	h.lo, h.far, h.buckets = centre-len(h.dense)/2, nil, 0
	for _, k := range keys {
		h.add(k, merged[k])
	}
	h.schema--
}

// ceilHalf returns ceil(k/2): Go's division truncates toward zero.
func ceilHalf(k int) int {
	if k > 0 {
		k++
	}
	return k / 2
}

// Metric returns the histogram's current state as a Prometheus metric with
// both the classic buckets and the native histogram, as client_golang's
// Histogram exposes them with the same options. The caller holds the lock
// that guards h; the metric shares no memory with h. h.desc must have no
// labels: the metric carries none.
//
// It fills the exposition's protobuf directly rather than through
// client_golang's const histograms, which take the buckets as maps and sort
// them again: that was a third of a /probe's cost before encoding.
func (h *Histogram) Metric() prometheus.Metric {
	m := &histogramMetric{desc: h.desc}
	hist := &m.h
	hist.CreatedTimestamp = timestamppb.New(h.created)
	hist.SampleCount, hist.SampleSum = proto.Uint64(h.count), proto.Float64(h.sum)
	hist.Schema, hist.ZeroThreshold, hist.ZeroCount = proto.Int32(h.schema), proto.Float64(nativeZeroThreshold), proto.Uint64(h.zero)
	// Classic buckets: cumulative counts, without +Inf (it is the count).
	n := len(h.upper)
	buckets, upper, cum := make([]dto.Bucket, n), slices.Clone(h.upper), make([]uint64, n)
	hist.Bucket = make([]*dto.Bucket, n)
	var c uint64
	for i := range n {
		c += h.counts[i]
		cum[i] = c
		buckets[i].UpperBound, buckets[i].CumulativeCount = &upper[i], &cum[i]
		hist.Bucket[i] = &buckets[i]
	}
	hist.PositiveSpan, hist.PositiveDelta = h.nativeSpans()
	return m
}

// nativeSpans returns the populated native buckets as protobuf spans and
// deltas, in client_golang's encoding: a new span after a gap of more than
// two empty buckets, smaller gaps filled with empty buckets.
func (h *Histogram) nativeSpans() ([]*dto.BucketSpan, []int64) {
	if h.buckets == 0 {
		return nil, nil
	}
	var far []int // far's keys lie below dense or above it
	for k := range h.far {
		far = append(far, k)
	}
	sort.Ints(far)
	type span struct {
		offset int32
		length uint32
	}
	spans := make([]span, 0, 4)
	deltas := make([]int64, 0, h.buckets)
	var prev int64
	next := 0 // the key after the last one emitted
	emit := func(k int, n int64) {
		if gap := k - next; len(spans) == 0 || gap > 2 {
			spans = append(spans, span{offset: int32(gap)})
		} else {
			for range gap {
				deltas = append(deltas, -prev)
				prev = 0
			}
			spans[len(spans)-1].length += uint32(gap)
		}
		spans[len(spans)-1].length++
		deltas = append(deltas, n-prev)
		prev, next = n, k+1
	}
	i := 0
	for ; i < len(far) && far[i] < h.lo; i++ {
		emit(far[i], h.far[far[i]])
	}
	for j, n := range h.dense {
		if n != 0 {
			emit(h.lo+j, n)
		}
	}
	for ; i < len(far); i++ {
		emit(far[i], h.far[far[i]])
	}
	out := make([]*dto.BucketSpan, len(spans))
	block := make([]dto.BucketSpan, len(spans))
	for j := range spans {
		block[j].Offset, block[j].Length = &spans[j].offset, &spans[j].length
		out[j] = &block[j]
	}
	return out, deltas
}

// histogramMetric is a histogram's state at one scrape, ready to expose.
type histogramMetric struct {
	desc *prometheus.Desc
	h    dto.Histogram
}

func (m *histogramMetric) Desc() *prometheus.Desc { return m.desc }

// Write hands out the prepared protobuf: a registry writes each metric
// once per scrape.
func (m *histogramMetric) Write(out *dto.Metric) error {
	out.Histogram = &m.h
	return nil
}
