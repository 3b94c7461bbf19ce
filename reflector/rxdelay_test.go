package reflector

import (
	"sync"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// TestReceiveDelayReported checks that every datagram read reaches the
// ReceiveDelay callback with its kernel receive timestamp, no later than
// the read time it is given.
func TestReceiveDelayReported(t *testing.T) {
	var (
		mu            sync.Mutex
		seen, stamped int
		bad           []int64
	)
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}, ReceiveDelay: func(now int64, rx []int64) {
		mu.Lock()
		defer mu.Unlock()
		for _, ts := range rx {
			seen++
			if ts != 0 {
				stamped++
				if d := now - ts; d < 0 || d > int64(time.Second) {
					bad = append(bad, d)
				}
			}
		}
	}})
	c := client(t, "udp4", 0)
	const n = 20
	for i := range n {
		if _, _, _, ok := exchange(t, c, r.Addrs()[0], senderPacket(t, uint32(i), 1, 44), replyWait); !ok {
			t.Fatalf("probe %d not answered", i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != n {
		t.Errorf("callback saw %d datagrams, want %d", seen, n)
	}
	if udpsock.KernelTimestamps && stamped != n {
		t.Errorf("%d of %d datagrams had a kernel receive timestamp", stamped, n)
	}
	if len(bad) > 0 {
		t.Errorf("delays outside [0, 1s]: %v", bad)
	}
}
