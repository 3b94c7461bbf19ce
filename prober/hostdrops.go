package prober

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/prometheus/client_golang/prometheus"
)

// ReplyDropCounter is a PortWatcher that also counts the kernel's drops of
// the replies to the watched ports (the host-drop collector,
// internal/hostdrops): ReplyDrops returns those that came from address
// from to the flow port port of proto ("udp", "icmp", "tcp"), by the
// kernel's drop reason; nil when it does not count them (the collector is
// off), empty when none was dropped.
type ReplyDropCounter interface {
	ReplyDrops(proto string, port uint16, from netip.Addr) map[string]uint64
}

var descDroppedByHost = metricdef.Desc(metricdef.Counter, "llama_probe_packets_dropped_by_host_total",
	"Replies to this session that reached this host and were dropped by its kernel, by the kernel's drop reason (--collector.host-drops); they are also counted as lost.",
	[]string{"reason"}, nil)

// hostDrops returns the session's replies that this host's kernel dropped,
// by reason: those that came from its destination to its module's flow
// ports of the destination's family. Sessions of one module that probe the
// same address share them. It is nil when they are not counted: no
// ReplyDropCounter, the collector off, the flow sockets not open yet, or
// raw ICMP sockets (never watched).
func (s *Session) hostDrops() map[string]uint64 {
	p := s.pool
	if p == nil {
		return nil
	}
	rc, ok := p.ports.(ReplyDropCounter)
	if !ok {
		return nil
	}
	dst := s.Dst().Addr()
	fam := family(dst)
	p.mu.RLock()
	watched := slices.Clone(p.watched)
	p.mu.RUnlock()
	var out map[string]uint64
	for _, w := range watched {
		if w.fam != fam {
			continue
		}
		m := rc.ReplyDrops(w.proto, w.port, dst)
		if m == nil {
			return nil
		}
		if out == nil {
			out = make(map[string]uint64)
		}
		for r, n := range m {
			out[r] += n
		}
	}
	return out
}

// collectHostDrops emits llama_probe_packets_dropped_by_host_total, one
// series per reason seen; nothing when drops are not counted.
func (c sessionCollector) collectHostDrops(ch chan<- prometheus.Metric) {
	for r, n := range c.s.hostDrops() {
		ch <- prometheus.MustNewConstMetric(descDroppedByHost, prometheus.CounterValue, float64(n), r)
	}
}

// hostDropsLine is the debug page's line on the replies the host dropped:
// empty when they are not counted.
func hostDropsLine(s *Session) string {
	m := s.hostDrops()
	if m == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("Dropped by this host (replies, of the lost):")
	if len(m) == 0 {
		b.WriteString(" none")
	}
	for _, r := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %s=%d", r, m[r])
	}
	b.WriteString("\n")
	return b.String()
}
