//go:build !linux

package hostdrops

import (
	"errors"
	"net/netip"
)

// kernel is the loaded program; there is none outside Linux.
type kernel struct{}

func (*kernel) setPort(portKey, bool)  {}
func (*kernel) drops() map[Drop]uint64 { return nil }
func (*kernel) replyDrops(uint8, uint16, netip.Addr) map[string]uint64 {
	return nil
}
func (*kernel) close() error      { return nil }
func (*kernel) latencyErr() error { return nil }
func (*kernel) receiveLatency() (h [2][3]LatencyHistogram, overflows, resyncs uint64, ok bool) {
	return h, 0, 0, false
}

// New returns a Collector that does not run: host drops need Linux's eBPF.
func New() *Collector {
	return &Collector{err: errors.New("host drops need Linux (eBPF on the kfree_skb tracepoint)")}
}
