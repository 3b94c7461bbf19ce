package reflector

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxSources bounds the per-source limiter table so that a spoofed-source
// flood cannot grow memory without limit.
const maxSources = 1 << 16

// sourceLimiter is a token bucket per source address. Allow is O(1); the
// table is swept of idle sources only when it is full.
type sourceLimiter struct {
	mu      sync.Mutex
	pps     rate.Limit
	burst   int
	sources map[netip.Addr]*rate.Limiter
}

func newSourceLimiter(pps float64) *sourceLimiter {
	return &sourceLimiter{pps: rate.Limit(pps), burst: burst(pps), sources: make(map[netip.Addr]*rate.Limiter)}
}

// allow reports whether one more packet from src is within its limit.
func (s *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.sources[src]
	if !ok {
		if len(s.sources) >= maxSources {
			s.evict(now)
		}
		l = rate.NewLimiter(s.pps, s.burst)
		s.sources[src] = l
	}
	return l.AllowN(now, 1)
}

// evict removes sources whose bucket is full again (idle long enough to be
// indistinguishable from new ones); if none is, it removes an arbitrary one.
func (s *sourceLimiter) evict(now time.Time) {
	for a, l := range s.sources {
		if l.TokensAt(now) >= float64(s.burst) {
			delete(s.sources, a)
		}
	}
	if len(s.sources) >= maxSources {
		for a := range s.sources {
			delete(s.sources, a)
			break
		}
	}
}
