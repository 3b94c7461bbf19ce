package reflector

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// Stateful-mode bounds: a socket remembers at most maxSessions test
// sessions, and forgets one idle for sessionIdle.
const (
	maxSessions = 1 << 16
	sessionIdle = 5 * 60 // seconds
)

// sessionKey identifies a STAMP test session at the reflector: the
// sender's address and port, the local address it was sent to (the local
// port is the socket's) and the RFC 8972 SSID.
type sessionKey struct {
	from netip.AddrPort
	to   netip.Addr
	ssid uint16
}

type sessionState struct {
	count    uint32 // test packets received in the session so far
	lastSeen int64  // Unix seconds
}

// sessionTable numbers the packets of each test session for stateful mode
// (RFC 8762 §4.3.1). One table belongs to one socket's receive loop, so it
// needs no lock; its size is bounded and idle sessions are evicted.
type sessionTable struct {
	m         map[sessionKey]*sessionState
	lastSweep int64
	sweeps    int              // for tests
	size      prometheus.Gauge // sessions over all tables; may be nil
}

func newSessionTable(size prometheus.Gauge) *sessionTable {
	return &sessionTable{m: make(map[sessionKey]*sessionState), size: size}
}

// next returns the reflector sequence number for one more packet of the
// session k at Unix second now, and false when the table is full of live
// sessions (the packet is then answered statelessly).
func (t *sessionTable) next(k sessionKey, now int64) (uint32, bool) {
	st := t.m[k]
	if st == nil {
		// A full table is swept at most once a second: a sender opening
		// sessions from ever new ports must not make every packet a scan.
		if (len(t.m) >= maxSessions && now != t.lastSweep) || now-t.lastSweep >= sessionIdle {
			t.sweep(now)
		}
		if len(t.m) >= maxSessions {
			return 0, false
		}
		st = &sessionState{}
		t.m[k] = st
		if t.size != nil {
			t.size.Inc()
		}
	}
	n := st.count
	st.count++
	st.lastSeen = now
	return n, true
}

// sweep forgets sessions idle for sessionIdle seconds.
func (t *sessionTable) sweep(now int64) {
	t.lastSweep = now
	t.sweeps++
	n := len(t.m)
	for k, st := range t.m {
		if now-st.lastSeen >= sessionIdle {
			delete(t.m, k)
		}
	}
	if t.size != nil {
		t.size.Sub(float64(n - len(t.m)))
	}
}
