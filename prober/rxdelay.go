package prober

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/ipv4"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/prober/internal/histogram"
)

// maxReceiveDelay bounds the delays ReceiveDelay records: a longer one
// means the wall clock stepped between the kernel's timestamp and the read.
const maxReceiveDelay = time.Minute

// receiveDelayBuckets are the classic buckets of
// llama_exporter_receive_delay_seconds, in seconds: powers of 4 from 1 µs
// to 1 s.
var receiveDelayBuckets = []float64{1e-6, 4e-6, 16e-6, 64e-6, 256e-6, 1.024e-3, 4.096e-3, 16.384e-3, 65.536e-3, 0.262144, 1.048576}

// ReceiveDelay is one role's llama_exporter_receive_delay_seconds: a
// histogram, classic and native, of how long datagrams waited between the
// kernel's receive timestamp and the exporter's read of them. It is a
// prometheus.Collector and safe for concurrent use.
type ReceiveDelay struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	h    *histogram.Histogram
}

// nameReceiveDelay is the receive delay's family, one series per role.
var nameReceiveDelay = metricdef.Name(metricdef.Histogram, "llama_exporter_receive_delay_seconds")

// NewReceiveDelay returns the histogram of role ("prober" or "reflector").
func NewReceiveDelay(role string) *ReceiveDelay {
	desc := prometheus.NewDesc(nameReceiveDelay,
		"Time from the kernel's receive timestamp of a datagram to the exporter's read of it, in seconds; the prober reads once per scheduler round (up to 5 ms) by design.",
		nil, prometheus.Labels{"role": role})
	return &ReceiveDelay{desc: desc, h: histogram.New(desc, receiveDelayBuckets, time.Now())}
}

// ObserveBatch records the datagrams of one read: now is the read's wall
// time and rxKernel their kernel receive timestamps, both in Unix ns. A
// timestamp of 0 (none), after now, or more than maxReceiveDelay before it
// is skipped. It does not allocate once the histogram has seen the range of
// its values.
func (d *ReceiveDelay) ObserveBatch(now int64, rxKernel []int64) {
	d.mu.Lock()
	for _, rx := range rxKernel {
		if delay := now - rx; rx != 0 && delay >= 0 && delay < int64(maxReceiveDelay) {
			d.h.Observe(float64(delay) / 1e9)
		}
	}
	d.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (d *ReceiveDelay) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

// Collect implements prometheus.Collector.
func (d *ReceiveDelay) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	m := d.h.Metric()
	d.mu.Unlock()
	ch <- roleMetric{m, prometheus.MakeLabelPairs(d.desc, nil)}
}

// roleMetric is a histogram's metric with its descriptor's constant
// labels, which histogram.Metric leaves out.
type roleMetric struct {
	prometheus.Metric
	labels []*dto.LabelPair
}

func (m roleMetric) Write(out *dto.Metric) error {
	if err := m.Metric.Write(out); err != nil {
		return err
	}
	out.Label = m.labels
	return nil
}

// recordDelays records the receive delays of msgs, read at wall (Unix ns),
// into p.rxDelay; rx is the loop's buffer for their timestamps.
func (p *pool) recordDelays(msgs []ipv4.Message, wall int64, rx []int64) {
	if p.rxDelay == nil || p.userTimestamps {
		return
	}
	rx = rx[:0]
	for i := range msgs {
		rx = append(rx, udpsock.ParseMeta(msgs[i].OOB[:msgs[i].NN]).KernelRX)
	}
	p.rxDelay.ObserveBatch(wall, rx)
}
