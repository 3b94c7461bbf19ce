package prober

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/prober/internal/pathmodel"
)

// traceSeqFlag marks the sequence numbers of trace probes, which the tracer
// numbers apart from the sessions' probes: a reply or an ICMP error that
// quotes one is the tracer's. A session would need 2^31 probes to reach it.
const traceSeqFlag = 1 << 31

// traceGap is the least time between the starts of two traces of one
// address family, over the whole process. A trace sends one probe per
// TTL, so a router, which sits at one distance from this host, is asked
// for at most one ICMP message per traceGap: Linux routers answer one a
// second per destination (net.ipv4.icmp_ratelimit, with a burst of 6),
// and others are alike.
const traceGap = time.Second

// traceTick is how often the tracer starts due traces and settles hop
// probes past their timeout.
const traceTick = 20 * time.Millisecond

// traceReadSlack is how long past its timeout a hop probe still waits for
// its answer to be read: the error queues are read before hop probes
// expire, but the reflector's replies come through the flow sockets'
// receive loops, which a loaded machine may run late. Without it the
// target's answers, not the routers', would go missing under load.
const traceReadSlack = 100 * time.Millisecond

// traceIdle is how long the tracer waits before it looks again for a due
// flow among the sessions of a family that had none, unless a flow's loss
// rises: looking costs a pass over every traced flow.
const traceIdle = 250 * time.Millisecond

// tracer traces the flows of every session whose module has path_trace:
// one goroutine for the process, so that pacing (traceGap) holds across
// modules. Hop probes leave from the flows' own sockets with a TTL of their
// own (a control message); their answers come back as replies from the
// reflector or as ICMP errors on the sockets' error queues.
type tracer struct {
	logger *slog.Logger
	wake   chan struct{} // a flow's loss rose: look now

	mu       sync.Mutex
	sessions []*Session
	out      map[uint32]hopProbe // hop probes awaiting an answer, by sequence number
	next     [2]int64            // per family: monotonic ns when a trace may start
	idle     [2]int64            // per family: monotonic ns before which no flow was due
	seq      uint32
	drain    []*flowConn  // scratch
	expired  []uint32     // scratch
	plans    [2]tracePlan // scratch
}

// hopProbe is one trace probe awaiting its answer.
type hopProbe struct {
	s         *Session
	fc        *flowConn
	flow, ttl int
	sent      int64 // monotonic ns
	sentWall  int64 // Unix ns
	txKernel  int64 // kernel transmit timestamp, Unix ns; 0 if none
}

// tracePlan is a trace the tracer decided to start: hop probes with TTL
// 1..n and sequence numbers seq..seq+n-1, sent outside the tracer's lock.
type tracePlan struct {
	s    *Session
	fc   *flowConn
	flow int
	n    int
	seq  uint32
	dst  netip.AddrPort
}

func newTracer(logger *slog.Logger) *tracer {
	return &tracer{logger: logger, wake: make(chan struct{}, 1), out: make(map[uint32]hopProbe)}
}

// run is the tracer's loop; it returns when stop is closed.
func (t *tracer) run(stop <-chan struct{}) {
	tick := time.NewTicker(traceTick)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-t.wake:
			t.mu.Lock()
			t.idle = [2]int64{}
			t.mu.Unlock()
		}
		t.round(mono())
	}
}

// add starts tracing session s.
func (t *tracer) add(s *Session) {
	s.paths.Wake = t.wake
	t.mu.Lock()
	t.sessions = append(t.sessions, s)
	t.mu.Unlock()
}

// round settles hop probes past their timeout and starts the most due
// trace of each address family that may start one.
func (t *tracer) round(now int64) {
	t.expire(now)
	t.mu.Lock()
	n := 0
	for fam := range 2 {
		if p, ok := t.plan(fam, now); ok {
			t.plans[n] = p
			n++
		}
	}
	t.mu.Unlock()
	for i := range t.plans[:n] {
		t.send(&t.plans[i])
		t.plans[i] = tracePlan{}
	}
}

// plan picks the flow most due for a trace among the sessions of family
// fam and registers its hop probes. Called with t.mu held.
func (t *tracer) plan(fam int, now int64) (tracePlan, bool) {
	if now < t.next[fam] || now < t.idle[fam] {
		return tracePlan{}, false
	}
	s, flow := t.pick(fam, now)
	if s == nil {
		t.idle[fam] = now + int64(traceIdle)
		return tracePlan{}, false
	}
	cs, err := s.pool.sockets(fam)
	if err != nil || flow >= len(cs) {
		return tracePlan{}, false
	}
	t.next[fam] = now + int64(traceGap)
	p := tracePlan{s: s, fc: cs[flow], flow: flow, n: s.paths.Begin(flow, now), dst: s.Dst()}
	if t.seq+uint32(p.n) >= traceSeqFlag {
		t.seq = 0 // 2^31 hop probes later: their numbers start again
	}
	p.seq = t.seq | traceSeqFlag
	wall := time.Now().UnixNano()
	for ttl := 1; ttl <= p.n; ttl++ {
		t.out[p.seq+uint32(ttl-1)] = hopProbe{s: s, fc: p.fc, flow: flow, ttl: ttl, sent: now, sentWall: wall}
	}
	t.seq += uint32(p.n)
	return p, true
}

// pick returns the session and flow of family fam most due for a trace
// (see pathState.candidate). Closed sessions are dropped.
func (t *tracer) pick(fam int, now int64) (best *Session, flow int) {
	bestClass, bestRank := pathmodel.ClassNotDue, int64(0)
	live := t.sessions[:0]
	for _, s := range t.sessions {
		if s.closed.Load() {
			continue
		}
		live = append(live, s)
		if family(s.Dst().Addr()) != fam {
			continue
		}
		f, c, rank := s.paths.Candidate(now)
		if c < bestClass || c == bestClass && c != pathmodel.ClassNotDue && rank < bestRank {
			best, flow, bestClass, bestRank = s, f, c, rank
		}
	}
	clear(t.sessions[len(live):])
	t.sessions = live
	return best, flow
}

// send sends the hop probes of plan p. A probe that cannot be sent is
// settled unanswered.
func (t *tracer) send(p *tracePlan) {
	pt := p.s.pool.trace
	for ttl := 1; ttl <= p.n; ttl++ {
		seq := p.seq + uint32(ttl-1)
		err := pt.send(p.fc, p.s, seq, p.flow, ttl, p.dst)
		if err == nil {
			continue
		}
		t.logger.Debug("trace probe not sent", "module", p.s.Module, "target", p.s.Target, "ttl", ttl, "err", err)
		t.mu.Lock()
		if pr, ok := t.out[seq]; ok {
			delete(t.out, seq)
			t.settle(pr, pathmodel.Answer{})
		}
		t.mu.Unlock()
	}
}

// expire settles as unanswered the hop probes older than their session's
// timeout (and traceReadSlack), after reading the error queues of their
// sockets: answers that came in time may still wait there.
func (t *tracer) expire(now int64) {
	t.mu.Lock()
	t.drain = t.drain[:0]
	for _, pr := range t.out {
		if expired(&pr, now) && !slices.Contains(t.drain, pr.fc) {
			t.drain = append(t.drain, pr.fc)
		}
	}
	t.mu.Unlock()
	for _, fc := range t.drain {
		fc.drainTxAll()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expired = t.expired[:0]
	for seq, pr := range t.out {
		if expired(&pr, now) {
			t.expired = append(t.expired, seq)
		}
	}
	slices.Sort(t.expired) // settle in TTL order
	for _, seq := range t.expired {
		pr := t.out[seq]
		delete(t.out, seq)
		t.settle(pr, pathmodel.Answer{})
	}
}

// expired reports whether hop probe pr, unanswered at monotonic time now,
// is lost.
func expired(pr *hopProbe, now int64) bool {
	return now-pr.sent > pr.s.timeout+int64(traceReadSlack)
}

// settle records the fate of hop probe pr and, when it was the trace's
// last, completes the trace. Called with t.mu held.
func (t *tracer) settle(pr hopProbe, a pathmodel.Answer) {
	if pr.s.paths.Settle(pr.flow, pr.ttl, a) {
		pr.s.paths.Complete(pr.flow, mono())
	}
}

// answer settles hop probe seq as answered by addr (the target itself when
// dest), whose answer the kernel stamped rxKernel (Unix ns, 0 if not).
// Called with t.mu held.
func (t *tracer) answer(seq uint32, pr hopProbe, addr netip.Addr, dest bool, rxKernel int64) {
	delete(t.out, seq)
	t.settle(pr, pathmodel.Answer{Addr: addr, RTT: hopRTT(&pr, rxKernel), OK: true, Dest: dest})
}

// hopRTT is the round-trip time of hop probe pr answered at rxKernel (Unix
// ns, 0 if unknown): the kernel's timestamps where they agree with the
// monotonic clock, which bounds them, else the monotonic time since the
// probe was sent.
func hopRTT(pr *hopProbe, rxKernel int64) int64 {
	elapsed := mono() - pr.sent
	t1 := pr.sentWall
	if pr.txKernel != 0 {
		t1 = pr.txKernel
	}
	if d := rxKernel - t1; rxKernel != 0 && d > 0 && d <= elapsed {
		return d
	}
	return elapsed
}

// txStamp records the kernel transmit timestamp ts of hop probe seq and
// reports whether seq is one.
func (t *tracer) txStamp(seq uint32, ts int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pr, ok := t.out[seq]
	if ok {
		pr.txKernel = ts
		t.out[seq] = pr
	}
	return ok
}

// onICMP takes an ICMP error read from flow socket fc of a tracing pool: a
// Time Exceeded or Destination Unreachable that answers one of our hop
// probes names that hop. The probe is found by the sequence number the
// message quotes, or, when it quotes none, as the only hop probe awaiting
// an answer on fc.
func (t *tracer) onICMP(pt *poolTrace, fc *flowConn, e *udpsock.ICMPError) {
	if !e.TimeExceeded() && !e.Unreachable() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	seq, quoted := pt.quotedSeq(e.Quote)
	if !quoted {
		seq = t.onlyProbe(fc)
	}
	pr, ok := t.out[seq]
	if !ok || pr.fc != fc {
		return
	}
	dest := e.Unreachable() && e.Offender == pr.s.Dst().Addr()
	t.answer(seq, pr, e.Offender, dest, e.KernelRX)
}

// onlyProbe returns the sequence number of the only hop probe awaiting an
// answer on fc, or 0 (never a trace probe's). Called with t.mu held.
func (t *tracer) onlyProbe(fc *flowConn) uint32 {
	var found uint32
	for seq, pr := range t.out {
		if pr.fc == fc {
			if found != 0 {
				return 0
			}
			found = seq
		}
	}
	return found
}

// poolTrace is a tracing pool's part of the tracer: the tracer goroutine's
// own encoder and buffers, and the reader of quoted probes.
type poolTrace struct {
	tracer    *tracer
	enc       Protocol // the tracer goroutine's
	quotedSeq func(quote []byte) (uint32, bool)
	buf, oob  []byte
}

// traceQuoter is a Protocol whose probes' sequence number can be read
// from the start of their UDP payload, as an ICMP error quotes it.
type traceQuoter interface {
	// quotedSeq returns the sequence number, and false when the quote is
	// too short or not one of our probes.
	quotedSeq(quote []byte) (uint32, bool)
}

// newPoolTrace returns the tracing part of pool p, whose module has
// path_trace and whose protocol is a traceQuoter (configuration checks
// that it traces).
func newPoolTrace(t *tracer, p *pool) *poolTrace {
	enc := p.proto.New(p.cfg)
	pt := &poolTrace{tracer: t, enc: enc, buf: make([]byte, p.cfg.PacketSize), oob: make([]byte, 0, udpsock.SendOOBSize)}
	if q, ok := enc.(traceQuoter); ok {
		pt.quotedSeq = q.quotedSeq
	} else {
		pt.quotedSeq = func([]byte) (uint32, bool) { return 0, false }
	}
	return pt
}

// enable has the flow sockets cs hand their ICMP errors to the tracer.
func (pt *poolTrace) enable(cs []*flowConn) error {
	for _, fc := range cs {
		c, ok := fc.FlowSocket.(*udpsock.Conn)
		if !ok {
			return fmt.Errorf("path_trace: flow socket %d is no UDP socket", fc.flow)
		}
		fc.icmpErrors = true
		if err := c.EnableICMPErrors(func(e *udpsock.ICMPError) { pt.tracer.onICMP(pt, fc, e) }); err != nil {
			return fmt.Errorf("path_trace: %w", err)
		}
	}
	return nil
}

// send sends hop probe seq of session s on flow socket fc with TTL ttl.
// Tracer goroutine only.
func (pt *poolTrace) send(fc *flowConn, s *Session, seq uint32, flow, ttl int, dst netip.AddrPort) error {
	p := Probe{SSID: uint16(s.paths.SSID.Load()), Seq: seq, Flow: flow, DSCP: s.cfg.DSCP}
	b, err := pt.enc.Encode(pt.buf, &p)
	if err != nil {
		return err
	}
	c := fc.FlowSocket.(*udpsock.Conn) // enable made sure of it
	pt.oob = c.AppendHopLimit(pt.oob[:0], ttl)
	return fc.sendOne(c, b, pt.oob, dst, txPending{s: s, seq: seq})
}

// reply takes a reflector's reply d from from to a hop probe, with the
// control messages oob of its datagram, and reports whether it was one.
func (pt *poolTrace) reply(from netip.AddrPort, d *DecodedReply, oob []byte) bool {
	t := pt.tracer
	t.mu.Lock()
	defer t.mu.Unlock()
	pr, ok := t.out[d.Seq]
	if !ok || pr.s.Dst() != from || d.SSID != 0 && d.SSID != uint16(pr.s.paths.SSID.Load()) {
		return false
	}
	t.answer(d.Seq, pr, from.Addr(), true, udpsock.ParseMeta(oob).KernelRX)
	return true
}

// sendOne sends one datagram b with control messages oob to dst on c, fc's
// UDP socket, keeping
// the socket's count of datagrams (the key of their transmit timestamps)
// in step with the scheduler's batches. A first failure may be an ICMP
// error the socket reported (IP_RECVERR) rather than a refused send: it is
// tried once more.
func (fc *flowConn) sendOne(c *udpsock.Conn, b, oob []byte, dst netip.AddrPort, p txPending) error {
	fc.sendMu.Lock()
	defer fc.sendMu.Unlock()
	var err error
	for range 2 {
		fc.mu.Lock()
		p.key = fc.sends
		fc.pending[p.key%txRing] = p
		fc.mu.Unlock()
		if _, _, err = c.WriteMsgUDPAddrPort(b, oob, dst); err == nil {
			fc.mu.Lock()
			fc.sends++
			fc.mu.Unlock()
			return nil
		}
	}
	return err
}

// registerTraceLocked gives the trace probes of s to dst an SSID of their
// own, unique among the pool's sessions to dst like the session's, so that
// a stateful reflector numbers them apart (RFC 8762 §4.3.1) and the
// session's directional loss is undisturbed. Called with p.mu held.
func (p *pool) registerTraceLocked(s *Session, dst netip.AddrPort) {
	ssid := uint16(s.paths.SSID.Load())
	if o, taken := p.sessions[demuxKey{dst, ssid}]; ssid == 0 || taken && o != s || ssid == uint16(s.ssid.Load()) {
		for {
			p.nextSSID++
			if _, taken := p.sessions[demuxKey{dst, p.nextSSID}]; p.nextSSID != 0 && !taken {
				break
			}
		}
		ssid = p.nextSSID
		s.paths.SSID.Store(uint32(ssid))
	}
	p.sessions[demuxKey{dst, ssid}] = s
}

// unregisterTraceLocked frees the trace SSID of s toward dst. Called with
// p.mu held.
func (p *pool) unregisterTraceLocked(s *Session, dst netip.AddrPort) {
	if k := (demuxKey{dst, uint16(s.paths.SSID.Load())}); p.sessions[k] == s {
		delete(p.sessions, k)
	}
}

// tracerLocked returns the process's tracer, starting it on first use.
// Called with m.mu held.
func (m *Manager) tracerLocked() *tracer {
	if m.tracer == nil {
		m.tracer = newTracer(m.logger)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.tracer.run(m.stop)
		}()
	}
	return m.tracer
}
