package prober

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// epoch anchors the monotonic clock: every session time is nanoseconds
// since epoch read through time.Since, which uses Go's monotonic reading,
// so a wall-clock step never moves it.
var epoch = time.Now()

// mono returns monotonic nanoseconds since process start.
func mono() int64 { return int64(time.Since(epoch)) }

// probeState is the fate of one probe.
type probeState uint8

const (
	stateEmpty    probeState = iota // slot never used
	statePending                    // sent, no reply, timeout not reached
	stateReceived                   // answered within timeout
	stateLost                       // no reply within timeout
)

// slot is one probe in a session's ring. 32 octets, no pointers.
type slot struct {
	sent  int64 // monotonic ns at send (T1)
	rtt   int64 // ns, (T4 - T1) - (T3 - T2), when received
	seq   uint32
	flow  uint16
	state probeState
	late  bool // a reply came after timeout
}

// Counters are a session's cumulative probe counts since it started.
type Counters struct {
	Sent, Received, Lost, Late, Duplicated, Reordered uint64
}

// Session probes one target for one module: it owns a fixed ring of probe
// slots covering window + timeout, cumulative counters and the RTT
// histogram. Its memory does not grow with uptime.
type Session struct {
	Module string         // module name
	Target string         // target as given in the scrape
	cfg    *config.Module // immutable for the session's life
	host   string         // host part of Target
	port   uint16
	ssid   uint16
	pool   *pool

	interval, timeout, window int64 // ns
	created                   int64 // monotonic ns
	hist                      prometheus.Histogram

	lastScrape atomic.Int64 // monotonic ns of the last scrape that named it
	closed     atomic.Bool

	// Owned by the scheduler.
	due       int64
	heapIndex int
	phased    bool

	mu         sync.Mutex
	dst        netip.AddrPort
	src        netip.Addr
	resolvedAt int64
	resolving  bool
	slots      []slot
	next       uint32 // sequence number of the next probe
	swept      uint32 // every probe below swept is decided
	c          Counters
	maxSeq     uint32 // highest sequence number answered in time
	anyReply   bool
	firstSent  int64         // monotonic ns of the first probe; -1 before
	sentFirst  chan struct{} // closed when the first probe is sent
	decided    chan struct{}
	isDecided  bool
}

// newSession builds a session; its ring holds every probe that can still be
// in flight or in the window, plus slack for scheduling jitter.
func newSession(module string, cfg *config.Module, target, host string, port uint16, dst netip.AddrPort, now int64) *Session {
	n := int((cfg.Window+cfg.Timeout)/cfg.Interval) + 4
	s := &Session{
		Module: module, Target: target, cfg: cfg, host: host, port: port,
		interval: int64(cfg.Interval), timeout: int64(cfg.Timeout), window: int64(cfg.Window),
		created: now, dst: dst, src: sourceFor(cfg, dst.Addr()), resolvedAt: now,
		slots:     make([]slot, n),
		firstSent: -1,
		decided:   make(chan struct{}),
		sentFirst: make(chan struct{}),
		hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                            "llama_probe_rtt_seconds",
			Help:                            "Round-trip time of answered probes, (T4 - T1) - (T3 - T2), in seconds.",
			Buckets:                         cfg.Buckets(),
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}),
	}
	s.lastScrape.Store(now)
	return s
}

// sourceFor returns the local address that probes to dst leave from: the
// module's source_ip_address, else the kernel's route choice, found by
// connecting a UDP socket (which sends nothing).
func sourceFor(cfg *config.Module, dst netip.Addr) netip.Addr {
	if cfg.SourceIP.IsValid() {
		return cfg.SourceIP
	}
	c, err := net.DialUDP(udpsock.Network(dst), nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

// Dst returns the target's current resolved address and port.
func (s *Session) Dst() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dst
}

// recordSend allocates the next sequence number at monotonic time now and
// returns it with the flow (source-port index) it goes out on.
func (s *Session) recordSend(now int64) (seq uint32, flow int, dst netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	seq = s.next
	s.next++
	flow = int(seq % uint32(s.cfg.Flows))
	sl := &s.slots[seq%uint32(len(s.slots))]
	// The ring spans more than timeout, so a reused slot is decided; should
	// it not be, it is lost now rather than silently overwritten.
	if sl.state == statePending {
		s.c.Lost++
	}
	*sl = slot{seq: seq, flow: uint16(flow), sent: now, state: statePending}
	if s.next-s.swept > uint32(len(s.slots)) {
		s.swept = s.next - uint32(len(s.slots))
	}
	s.c.Sent++
	if s.firstSent < 0 {
		s.firstSent = now
		close(s.sentFirst)
	}
	return seq, flow, s.dst
}

// onReply accounts for one reply to probe seq received at monotonic time
// now, the reflector having held it for dwell ns (T3 - T2; 0 if unknown).
// Each probe is decided at most once; anything after that is counted as
// late or duplicated, never twice.
func (s *Session) onReply(seq uint32, now, dwell int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq >= s.next {
		return // never sent: not ours
	}
	if s.next-seq > uint32(len(s.slots)) {
		s.c.Late++ // so old that its slot is reused: necessarily past timeout
		return
	}
	sl := &s.slots[seq%uint32(len(s.slots))]
	switch sl.state {
	case stateReceived:
		s.c.Duplicated++
		return
	case stateLost:
		if sl.late {
			s.c.Duplicated++
		} else {
			sl.late = true
			s.c.Late++
		}
		return
	}
	elapsed := now - sl.sent
	if elapsed > s.timeout {
		sl.state, sl.late = stateLost, true
		s.c.Lost++
		s.c.Late++
		s.markDecidedLocked()
		return
	}
	rtt := elapsed
	// The reflector's dwell comes from another clock: trust it only when it
	// is smaller than what we measured, so a clock step on either side
	// never yields a negative or absurd RTT.
	if dwell > 0 && dwell < elapsed {
		rtt -= dwell
	}
	sl.state, sl.rtt = stateReceived, rtt
	s.c.Received++
	if s.anyReply && seq < s.maxSeq {
		s.c.Reordered++
	} else {
		s.maxSeq = seq
	}
	s.anyReply = true
	s.hist.Observe(float64(rtt) / 1e9)
	s.markDecidedLocked()
}

// sweepLocked marks every pending probe older than timeout as lost.
func (s *Session) sweepLocked(now int64) {
	n := uint32(len(s.slots))
	for s.swept != s.next {
		sl := &s.slots[s.swept%n]
		if sl.state == statePending {
			if now-sl.sent <= s.timeout {
				return // later probes were sent later still
			}
			sl.state = stateLost
			s.c.Lost++
			s.markDecidedLocked()
		}
		s.swept++
	}
}

func (s *Session) markDecidedLocked() {
	if !s.isDecided {
		s.isDecided = true
		close(s.decided)
	}
}

// firstProbeDeadline returns when the first probe will be decided at the
// latest (monotonic ns), or -1 if none has been sent.
func (s *Session) firstProbeDeadline() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstSent < 0 {
		return -1
	}
	return s.firstSent + s.timeout + 1
}

// Snapshot sweeps timed-out probes and summarises the window now.
func (s *Session) Snapshot() Snapshot { return s.snapshot(mono()) }

// snapshot is Snapshot at monotonic time now.
func (s *Session) snapshot(now int64) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	snap := summarize(s.slots, s.next, now, s.timeout, s.window, s.firstSent)
	snap.Counters = s.c
	snap.Dst, snap.Src = s.dst, s.src
	return snap
}

// recent returns up to n of the newest probes, newest first, for debug
// output.
func (s *Session) recent(n int) []slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]slot, 0, n)
	for i := uint32(0); i < uint32(n) && i < s.next && i < uint32(len(s.slots)); i++ {
		seq := s.next - 1 - i
		out = append(out, s.slots[seq%uint32(len(s.slots))])
	}
	return out
}
