package prober

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestReceiveDelay checks what ObserveBatch records and skips, that the
// histogram carries its role, classic and native buckets, and that an
// observation does not allocate.
func TestReceiveDelay(t *testing.T) {
	d := NewReceiveDelay("reflector")
	now := time.Now().UnixNano()
	d.ObserveBatch(now, []int64{
		now - 3000,                      // 3 µs
		now - 3000,                      // 3 µs
		now - int64(2*time.Millisecond), // 2 ms
		0,                               // no timestamp
		now + 1000,                      // after the read: a clock step
		now - int64(2*time.Minute),      // too old: a clock step
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d, NewReceiveDelay("prober"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || len(mfs[0].Metric) != 2 {
		t.Fatalf("gathered %v, want one family with two roles", mfs)
	}
	var h *dto.Histogram
	for _, m := range mfs[0].Metric {
		if len(m.Label) == 1 && m.Label[0].GetName() == "role" && m.Label[0].GetValue() == "reflector" {
			h = m.Histogram
		}
	}
	if h == nil {
		t.Fatalf("no series with role=reflector in %v", mfs[0])
	}
	if h.GetSampleCount() != 3 || h.GetSampleSum() < 2.005e-3 || h.GetSampleSum() > 2.007e-3 {
		t.Errorf("count %d sum %g, want 3 and 2.006e-3", h.GetSampleCount(), h.GetSampleSum())
	}
	if c := h.Bucket[2].GetCumulativeCount(); h.Bucket[2].GetUpperBound() != 16e-6 || c != 2 {
		t.Errorf("bucket le=%g counts %d, want le=1.6e-05 with 2", h.Bucket[2].GetUpperBound(), c)
	}
	if h.GetSchema() != 3 || len(h.PositiveSpan) == 0 {
		t.Errorf("native schema %d spans %v, want schema %d (bucket factor 2^(1/8)) and buckets", h.GetSchema(), h.PositiveSpan, 3)
	}
	batch := []int64{now - 3000, now - 5000, now - 40000}
	if a := testing.AllocsPerRun(100, func() { d.ObserveBatch(now, batch) }); a != 0 {
		t.Errorf("ObserveBatch allocates %v times per call", a)
	}
}

// BenchmarkReceiveDelay measures recording the delays of one full read
// batch of replies.
func BenchmarkReceiveDelay(b *testing.B) {
	d := NewReceiveDelay("prober")
	now := time.Now().UnixNano()
	batch := make([]int64, recvBatch)
	for i := range batch {
		batch[i] = now - int64(i*1000)
	}
	b.ReportAllocs()
	for b.Loop() {
		d.ObserveBatch(now, batch)
	}
}
