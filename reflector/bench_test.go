package reflector

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// BenchmarkReflect measures the reflector's per-packet path: limits,
// decode, stateful numbering, TLV processing and encode of one 44-octet
// probe (the socket I/O is measured by cmd/llama-loadtest).
func BenchmarkReflect(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  Config
		size int
	}{
		{"stateless", Config{Stateless: true}, 44},
		{"stateful", Config{}, 44},
		{"stateful+limits", Config{MaxPPS: 1e12, MaxPPSPerSource: 1e12}, 44},
		{"stateful+CoS", Config{}, 52},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, err := New(tc.cfg, prometheus.NewRegistry(), discard)
			if err != nil {
				b.Fatal(err)
			}
			req := make([]byte, tc.size)
			p := stamp.SenderPacket{Sequence: 1, Timestamp: stamp.NewTimestamp(time.Now()), SSID: 7}
			p.MarshalTo(req)
			if tc.size >= 52 {
				var v [stamp.ClassOfServiceLen]byte
				(&stamp.ClassOfService{DSCP1: 46}).MarshalTo(v[:])
				stamp.AppendTLV(req[44:44], stamp.TLVFlagU, stamp.TLVClassOfService, v[:])
			}
			out := make([]byte, 1500)
			from := netip.MustParseAddrPort("198.18.0.1:40000")
			meta := udpsock.Meta{Dst: netip.MustParseAddr("198.18.0.2"), TTL: 62, TOS: 0xb8}
			st := newSessionTable(new(atomic.Int64))
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, _, _, ok := r.reflect(req, out, from, meta, now, st, nil); !ok {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// BenchmarkReplyBatch measures collecting a batch of 32 replies from one
// sender into a UDP GSO train and writing T3 into each (the send itself is
// measured by cmd/llama-loadtest).
func BenchmarkReplyBatch(b *testing.B) {
	c, err := udpsock.Listen("udp4", netip.MustParseAddrPort("127.0.0.1:0"), udpsock.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rb := newReplyBatch(c, discard)
	reply := make([]byte, stamp.ReflectorPacketLen)
	to := netip.MustParseAddrPort("198.18.0.1:40000")
	t3 := stamp.NewTimestamp(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		for range batchSize {
			rb.add(reply, to, netip.Addr{}, 0, -1, true)
		}
		rb.stampT3(t3, 4, nil)
		rb.k = 0
	}
}
