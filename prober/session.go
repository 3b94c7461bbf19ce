package prober

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/prober/internal/histogram"
	"github.com/llama-exporter/llama_exporter/prober/internal/pathmodel"
	"github.com/llama-exporter/llama_exporter/prober/internal/window"
)

// epoch anchors the monotonic clock: every session time is nanoseconds
// since epoch read through time.Since, which uses Go's monotonic reading,
// so a wall-clock step never moves it.
var epoch = time.Now()

// mono returns monotonic nanoseconds since process start.
func mono() int64 { return int64(time.Since(epoch)) }

// Counters are a session's cumulative counts since it started.
type Counters struct {
	Sent, Received, Lost, Late, Duplicated, Reordered uint64
	// ForwardLost and BackwardLost split Lost by direction where a
	// stateful reflector made it known.
	ForwardLost, BackwardLost uint64
	// DSCPRemarkedForward and DSCPRemarkedBackward count replies whose
	// DSCP was changed on the way out (per the reflector's Class of Service
	// TLV) or on the way back.
	DSCPRemarkedForward, DSCPRemarkedBackward uint64
	// HopsChanges counts changes of the forward hop count.
	HopsChanges uint64
	// TimestampFallbacks counts answered probes whose RTT had to use
	// user-space timestamps because a kernel timestamp was missing or
	// inconsistent.
	TimestampFallbacks uint64
	// TimestampsInvalid counts answered probes whose reply carried T2 and
	// T3 that cannot be used (zero, T3 before T2, PTP unconverted, or a
	// dwell not shorter than the RTT): their RTT includes the dwell.
	TimestampsInvalid uint64
}

// Carried records which optional parts of replies a session has seen, so
// that the series they feed are absent, not 0, until a reply carried one:
// a reflector may send no Sender TTL or Class of Service TLV, or unusable
// timestamps, and a protocol may have none of them (Prober's fields).
type Carried struct {
	// Timestamps: a reply carried usable T2 and T3; the dwell is known.
	Timestamps bool
	// SenderTTL: a reply carried the TTL its probe arrived with; the
	// forward hop count is known.
	SenderTTL bool
	// ClassOfService: a reply carried the DSCP the reflector received;
	// forward remarking is known.
	ClassOfService bool
	// ReplyDSCP: such a reply's own DSCP was read as well; backward
	// remarking is known.
	ReplyDSCP bool
}

// Session probes one target for one module: it owns a fixed ring of probe
// slots covering window + timeout, cumulative counters and the RTT
// histograms. Its memory does not grow with uptime.
type Session struct {
	Module string         // module name
	Target string         // target as given in the scrape
	cfg    *config.Module // immutable for the session's life
	host   string         // host part of Target
	port   uint16
	ssid   atomic.Uint32 // RFC 8972 SSID, 16 bits; changes only on an address change
	pool   *pool

	interval, timeout, window int64                // ns
	created                   int64                // monotonic ns
	hist, dwellHist           *histogram.Histogram // RTT and reflector dwell; guarded by mu

	lastScrape atomic.Int64 // monotonic ns of the last scrape that named it
	closed     atomic.Bool

	// Owned by the scheduler.
	phased bool

	mu         sync.Mutex
	dst        netip.AddrPort
	src        netip.Addr
	resolvedAt int64
	resolving  bool
	slots      []window.Slot
	next       uint32 // sequence number of the next probe
	swept      uint32 // every probe below swept is decided
	c          Counters
	maxSeq     uint32 // highest sequence number answered in time
	maxArr     int64  // latest arrival of an answered probe, Unix ns
	anyReply   bool
	firstSent  int64         // monotonic ns of the first probe; -1 before
	sentFirst  chan struct{} // closed when the first probe is sent
	decided    chan struct{}
	isDecided  bool
	stateful   bool            // the reflector keeps per-session sequence numbers
	flows      []reflectorFlow // per flow, for directional loss
	hops       int             // last forward hop count; -1 unknown
	kernelTS   bool            // the last answered probe used kernel timestamps
	flowSent   []uint64        // per flow, with flow_metrics
	flowLost   []uint64
	inFlight   int              // probes sent and not yet decided
	win        window.State     // summary of the decided probes in the window
	paths      *pathmodel.State // per-flow path tracing; nil without path_trace
	proto      *Prober          // the module's protocol: what its replies can carry
	carried    Carried          // what the replies did carry
}

// DefaultDwellBuckets are the classic buckets of
// llama_probe_reflector_dwell_seconds: 1µs to ~1s.
var DefaultDwellBuckets = prometheus.ExponentialBuckets(1e-6, 4, 11)

// newSession builds a session; its ring holds every probe that can still be
// in flight or in the window, plus slack for scheduling jitter.
func newSession(module string, cfg *config.Module, t resolvedTarget, now int64) *Session {
	n := int((cfg.Window+cfg.Timeout)/cfg.Interval) + 4
	s := &Session{
		Module: module, Target: t.name, cfg: cfg, host: t.host, port: t.port,
		interval: int64(cfg.Interval), timeout: int64(cfg.Timeout), window: int64(cfg.Window),
		created: now, dst: t.dst, src: sourceFor(cfg, t.dst.Addr()), resolvedAt: now,
		slots:     make([]window.Slot, n),
		firstSent: -1,
		decided:   make(chan struct{}),
		sentFirst: make(chan struct{}),
		flows:     make([]reflectorFlow, cfg.Flows),
		hops:      -1,
		hist:      histogram.New(descRTT, cfg.Buckets(), epoch.Add(time.Duration(now))),
		dwellHist: histogram.New(descDwell, DefaultDwellBuckets, epoch.Add(time.Duration(now))),
		paths:     pathmodel.New(cfg),
		proto:     Probers[cfg.Prober],
	}
	if s.proto == nil {
		s.proto = &Prober{} // carries nothing: a test's module
	}
	if cfg.FlowMetrics {
		s.flowSent = make([]uint64, cfg.Flows)
		s.flowLost = make([]uint64, cfg.Flows)
	}
	s.win = window.NewState(cfg.Flows, cfg.FlowMetrics || cfg.PathTrace != nil)
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

// recordSend is recordSendAt with the wall clock read from the monotonic
// one, for tests.
func (s *Session) recordSend(now int64) (seq uint32, flow int, dst netip.AddrPort) {
	return s.recordSendAt(now, epochUnix+now)
}

// recordSendAt allocates the next sequence number at monotonic time now,
// wall clock t1 (Unix ns: the T1 that the probe carries), and returns it
// with the flow (source-port index) it goes out on.
func (s *Session) recordSendAt(now, t1 int64) (seq uint32, flow int, dst netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(now)
	seq = s.next
	n := uint32(len(s.slots))
	// The ring spans window + timeout, so the slot about to be reused has
	// left the window already; should it not have (a stalled clock), it
	// is decided and let go now rather than silently overwritten.
	for seq-s.win.Tail >= n {
		if s.win.Head == s.win.Tail {
			if old := s.slotAt(s.win.Head); old.State == window.Pending {
				s.markLostLocked(old)
			}
			s.enterLocked(s.slotAt(s.win.Head))
			s.win.Head++
		}
		s.leaveLocked(s.slotAt(s.win.Tail))
		s.win.Tail++
	}
	s.next++
	flow = int(seq % uint32(s.cfg.Flows))
	sl := s.slotAt(seq)
	if sl.State == window.Pending {
		s.markLostLocked(sl)
	}
	*sl = window.Slot{Seq: seq, Flow: uint16(flow), Sent: now, T1: uint32(t1), State: window.Pending}
	if s.next-s.swept > n {
		s.swept = s.next - n
	}
	s.inFlight++
	s.c.Sent++
	if s.flowSent != nil {
		s.flowSent[flow]++
	}
	if s.firstSent < 0 {
		s.firstSent = now
		close(s.sentFirst)
	}
	return seq, flow, s.dst
}

// onTxTimestamp records the kernel's transmit timestamp of probe seq.
func (s *Session) onTxTimestamp(seq uint32, ts int64) {
	if seq&traceSeqFlag != 0 && s.pool.trace != nil && s.pool.trace.tracer.txStamp(seq, ts) {
		return // a trace probe's
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slotLocked(seq); sl != nil && sl.State == window.Pending {
		sl.TxKernel = ts
	}
}

// awaitsTxTimestamp reports whether probe seq is still pending without its
// kernel transmit timestamp: its reply overtook the scheduler's read of the
// error queue.
func (s *Session) awaitsTxTimestamp(seq uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slotLocked(seq)
	return sl != nil && sl.State == window.Pending && sl.TxKernel == 0
}

// slotLocked returns probe seq's slot, or nil if it was never sent or its
// slot has been reused.
func (s *Session) slotLocked(seq uint32) *window.Slot {
	if seq >= s.next || s.next-seq > uint32(len(s.slots)) {
		return nil
	}
	sl := &s.slots[seq%uint32(len(s.slots))]
	if sl.Seq != seq || sl.State == window.Empty {
		return nil
	}
	return sl
}

// sent reports whether probe seq of s, in its ring, carried T1 t1 (Unix
// ns, as the reply echoes it), and whether it still awaits its reply.
func (s *Session) sent(seq uint32, t1 int64) (ours, pending bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slotLocked(seq)
	if sl == nil || t1 == 0 || sl.T1 != uint32(t1) {
		return false, false
	}
	return true, sl.State == window.Pending
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

// histogramMetrics returns the RTT and dwell histograms as they are now.
func (s *Session) histogramMetrics() (rtt, dwell prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hist.Metric(), s.dwellHist.Metric()
}

// snapshot is Snapshot at monotonic time now. Its cost does not depend
// on the window's length.
func (s *Session) snapshot(now int64) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(now)
	end := now - s.timeout
	start := end - s.window
	snap := Snapshot{
		Counters: s.c, Dst: s.dst, Src: s.src, InFlight: s.inFlight,
		Stateful: s.stateful, Hops: s.hops, Carried: s.carried, KernelTimestamps: s.kernelTS,
		Success: s.win.LastReceivedSent >= start,
	}
	if s.firstSent >= 0 && s.firstSent <= end {
		snap.Window = float64(end-max(start, s.firstSent)) / 1e9
	}
	s.win.Fill(&snap.Summary)
	if s.flowSent != nil {
		snap.FlowSent = slices.Clone(s.flowSent)
		snap.FlowLost = slices.Clone(s.flowLost)
	}
	return snap
}

// recent returns up to n of the newest probes, newest first, for debug
// output.
func (s *Session) recent(n int) []window.Slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]window.Slot, 0, n)
	for i := uint32(0); i < uint32(n) && i < s.next && i < uint32(len(s.slots)); i++ {
		seq := s.next - 1 - i
		out = append(out, s.slots[seq%uint32(len(s.slots))])
	}
	return out
}

// waitFirst waits until the session's first probe is decided (answered or
// timed out) or ctx ends, whichever is first.
func (s *Session) waitFirst(ctx context.Context) {
	select {
	case <-s.sentFirst: // the scheduler sends it at once
	case <-ctx.Done():
		return
	}
	t := time.NewTimer(time.Duration(s.firstProbeDeadline() - mono()))
	defer t.Stop()
	select {
	case <-s.decided:
	case <-ctx.Done():
	case <-t.C: // timed out: Snapshot's sweep decides it as lost
	}
}
