package reflector

import (
	"net/netip"
	"sync/atomic"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// Stateful-mode bounds: the reflector remembers at most maxSessions test
// sessions over all its sockets, and forgets one idle for sessionIdle. The
// bound is shared rather than per socket because the kernel does not spread
// senders evenly over SO_REUSEPORT sockets: on loopback, all flows of one
// sender socket land on one reflector socket. About 120 octets each.
const (
	maxSessions = 1 << 18
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
	count    uint32          // test packets received in the session so far
	lastSeen int64           // Unix seconds
	lastT1   stamp.Timestamp // Sender Timestamp of the latest packet
}

// sessionTable numbers the packets of each test session for stateful mode
// (RFC 8762 §4.3.1). One table belongs to one socket's receive loop, so it
// needs no lock; its size is bounded and idle sessions are evicted.
type sessionTable struct {
	m         map[sessionKey]*sessionState
	lastSweep int64
	sweeps    int           // for tests
	count     *atomic.Int64 // sessions in all the reflector's tables
}

func newSessionTable(count *atomic.Int64) *sessionTable {
	return &sessionTable{m: make(map[sessionKey]*sessionState), count: count}
}

// next returns the reflector sequence number for one more packet of the
// session k, with Sender Sequence Number seq and Sender Timestamp t1,
// received at Unix second now, and false when the table is full of live
// sessions (the packet is then answered statelessly).
//
// A sender started again on the same 5-tuple and SSID (TWAMP-Light
// senders send SSID 0) numbers its packets from 0 again: its count starts
// again too (RFC 8762 §4.3.1 leaves the session's bounds to the
// reflector), as twampy's reflector does, or the sender reads the earlier
// run's count as negative loss. A late duplicate of a packet 0 carries an
// older T1 than the packets since, and restarts nothing.
func (t *sessionTable) next(k sessionKey, seq uint32, t1 stamp.Timestamp, now int64) (uint32, bool) {
	st := t.m[k]
	if st == nil {
		// When full, this table is swept at most once a second: a sender
		// opening sessions from ever new ports must not make every packet
		// a scan.
		full := t.count.Load() >= maxSessions
		if (full && now != t.lastSweep) || now-t.lastSweep >= sessionIdle {
			t.sweep(now)
			full = t.count.Load() >= maxSessions
		}
		if full {
			return 0, false
		}
		st = &sessionState{}
		t.m[k] = st
		t.count.Add(1)
	} else if seq == 0 && t1.Sub(st.lastT1) > 0 {
		st.count = 0
	}
	if st.count == 0 || t1.Sub(st.lastT1) > 0 {
		st.lastT1 = t1
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
	t.count.Add(int64(len(t.m) - n))
}
