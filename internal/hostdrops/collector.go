package hostdrops

import (
	"net/netip"
	"sync"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	enabledDesc = metricdef.Desc(metricdef.Gauge, "llama_exporter_host_drops_enabled",
		"1 when the eBPF collector of the kernel's drops of probe traffic runs (--collector.host-drops), 0 otherwise.", nil, nil)
	latencyDesc = metricdef.Desc(metricdef.Histogram, "llama_host_receive_latency_seconds",
		"Time the probe traffic received spent in each stage of this host's receive path (backlog: netif_rx to netif_receive_skb; stack: to its socket's queue; socket_queue: to the exporter's read), in seconds, measured in the kernel (--collector.host-drops). role is prober (replies) or reflector (probes).",
		[]string{"role", "stage"}, nil)
	overflowsDesc = metricdef.Desc(metricdef.Counter, "llama_host_receive_latency_overflows_total",
		"Datagrams of the probe traffic that receive latency did not follow: its tables were full (a socket with 64 datagrams queued, or 16384 packets in flight).", nil, nil)
	resyncsDesc = metricdef.Desc(metricdef.Counter, "llama_host_receive_latency_resyncs_total",
		"Times receive latency found a packet where it could not be (a reused skb address, a read of a datagram it had not seen queued) and started following afresh rather than pair it wrongly.", nil, nil)
	dropsDesc = metricdef.Desc(metricdef.Counter, "llama_host_drops_total",
		"Packets of this exporter's probe traffic received by this host and dropped by its kernel, by the kernel's drop reason and the kind of packet.",
		[]string{"reason", "kind"}, nil)
)

// Collector is the host-drop collector: a prometheus.Collector of
// llama_exporter_host_drops_enabled and llama_host_drops_total, and the
// registry of the ports whose traffic is counted. Its methods are safe for
// concurrent use; on a Collector that could not start, and on the zero
// Collector (the collector turned off), they do nothing and it exports
// enabled 0.
type Collector struct {
	err error   // why it does not run; nil when it does
	k   *kernel // the loaded program; nil when err != nil

	mu    sync.Mutex
	watch map[portKey]int // watchers of each port
}

type portKey struct {
	role uint8
	port uint16
}

// Err returns nil when the collector runs, or the error that names what is
// missing (Linux, BTF, capabilities).
func (c *Collector) Err() error { return c.err }

// WatchReflector counts drops of UDP datagrams to the reflector's port.
func (c *Collector) WatchReflector(port uint16) { c.add(roleReflector, port, 1) }

// UnwatchReflector undoes one WatchReflector.
func (c *Collector) UnwatchReflector(port uint16) { c.add(roleReflector, port, -1) }

// WatchPort counts drops of the replies to a prober flow socket: proto is
// UDP (its local port), ICMP (a ping socket's echo Identifier) or TCP (its
// source port); any other proto is ignored. Calls nest: a port is watched
// until each WatchPort has had its UnwatchPort.
func (c *Collector) WatchPort(proto string, port uint16) { c.add(role(proto), port, 1) }

// UnwatchPort undoes one WatchPort.
func (c *Collector) UnwatchPort(proto string, port uint16) { c.add(role(proto), port, -1) }

func role(proto string) uint8 {
	switch proto {
	case UDP:
		return roleUDP
	case ICMP:
		return roleICMP
	case TCP:
		return roleTCP
	}
	return 0
}

// add changes the number of watchers of (role, port) by d and tells the
// kernel when the port starts or stops being watched.
func (c *Collector) add(role uint8, port uint16, d int) {
	if c.k == nil || role == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := portKey{role, port}
	n := c.watch[k]
	switch {
	case d > 0 && n == 0:
		c.k.setPort(k, true)
	case d < 0 && n == 1:
		c.k.setPort(k, false)
	case d < 0 && n == 0:
		return
	}
	if n+d == 0 {
		delete(c.watch, k)
	} else {
		c.watch[k] = n + d
	}
}

// Drops returns the drops counted so far; nil when the collector does not
// run.
func (c *Collector) Drops() map[Drop]uint64 {
	if c.k == nil {
		return nil
	}
	return c.k.drops()
}

// ReplyDrops returns the drops of the replies that came from address from
// to the prober flow socket of proto (UDP, ICMP or TCP, as WatchPort takes
// them) and port, by reason (as Drop.Reason names it). It is nil when the
// collector does not run or proto is unknown, and empty (not nil) when it
// runs and none was dropped. A flow counts at most four distinct reasons
// per CPU; llama_host_drops_total counts every one.
func (c *Collector) ReplyDrops(proto string, port uint16, from netip.Addr) map[string]uint64 {
	kind, ok := replyKinds[proto]
	if c.k == nil || !ok {
		return nil
	}
	if m := c.k.replyDrops(kind, port, from.Unmap()); m != nil {
		return m
	}
	return map[string]uint64{}
}

// replyKinds are the kind numbers of the replies to each flow protocol.
var replyKinds = map[string]uint8{UDP: 1, ICMP: 2, TCP: 3}

// Roles and Stages are the values of the role and stage labels of
// llama_host_receive_latency_seconds, in the order ReceiveLatency indexes
// them.
var (
	Roles  = [...]string{"prober", "reflector"}
	Stages = [...]string{"backlog", "stack", "socket_queue"}
)

// LatencyBounds are the upper bounds of a LatencyHistogram's buckets in
// seconds: 1 µs to 65.536 ms in powers of two; one more bucket counts
// what is above.
var LatencyBounds = func() []float64 {
	b := make([]float64, latencyBounds)
	for i := range b {
		b[i] = float64(uint64(1)<<i) * 1e-6
	}
	return b
}()

const latencyBounds = 17

// LatencyHistogram is one (role, stage) of receive latency.
type LatencyHistogram struct {
	// Buckets[i] counts the times in (LatencyBounds[i-1],
	// LatencyBounds[i]]; the last one those above every bound. Not
	// cumulative.
	Buckets [latencyBounds + 1]uint64
	// SumNs is the sum of the times in nanoseconds.
	SumNs uint64
}

// Count returns the number of times in h.
func (h *LatencyHistogram) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += b
	}
	return n
}

// ReceiveLatency returns the receive latency histograms, indexed by Roles
// and Stages, and the datagrams not followed (overflows) or followed
// afresh (resyncs); ok is false when receive latency is not measured.
func (c *Collector) ReceiveLatency() (h [2][3]LatencyHistogram, overflows, resyncs uint64, ok bool) {
	if c.k == nil {
		return h, 0, 0, false
	}
	return c.k.receiveLatency()
}

// LatencyErr returns nil when receive latency is measured, or why not.
func (c *Collector) LatencyErr() error {
	if c.k == nil {
		return c.err
	}
	return c.k.latencyErr()
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- enabledDesc
	ch <- dropsDesc
	ch <- latencyDesc
	ch <- overflowsDesc
	ch <- resyncsDesc
}

// collectLatency emits receive latency, when it is measured.
func (c *Collector) collectLatency(ch chan<- prometheus.Metric) {
	h, overflows, resyncs, ok := c.ReceiveLatency()
	if !ok {
		return
	}
	for r := range Roles {
		for s := range Stages {
			lh := &h[r][s]
			buckets := make(map[float64]uint64, latencyBounds)
			var cum uint64
			for i, bound := range LatencyBounds {
				cum += lh.Buckets[i]
				buckets[bound] = cum
			}
			ch <- prometheus.MustNewConstHistogram(latencyDesc, lh.Count(), float64(lh.SumNs)/1e9, buckets, Roles[r], Stages[s])
		}
	}
	ch <- prometheus.MustNewConstMetric(overflowsDesc, prometheus.CounterValue, float64(overflows))
	ch <- prometheus.MustNewConstMetric(resyncsDesc, prometheus.CounterValue, float64(resyncs))
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	enabled := 0.0
	if c.k != nil {
		enabled = 1
	}
	ch <- prometheus.MustNewConstMetric(enabledDesc, prometheus.GaugeValue, enabled)
	for d, n := range c.Drops() {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), d.Reason, d.Kind)
	}
	c.collectLatency(ch)
}

// Close detaches the program and frees its maps.
func (c *Collector) Close() error {
	if c.k == nil {
		return nil
	}
	return c.k.close()
}
