package prober

import "github.com/llama-exporter/llama_exporter/prober/internal/window"

// timedReply is a reply as the session accounts for it: what
// Protocol.Decode read (DecodedReply), with the times of its arrival and
// what the socket told of it (DSCP, kernel timestamps).
type timedReply struct {
	seq       uint32 // Sender Sequence Number: our probe
	reflSeq   uint32 // the reflector's Sequence Number
	t4        int64  // monotonic ns of arrival: read, less the kernel's wait
	read      int64  // monotonic ns when read; 0 if unknown
	rxKernel  int64  // kernel software RX timestamp, Unix ns; 0 if none
	stamps    Stamps // whether the reply carries usable T2 and T3
	dwell     int64  // T3 - T2 in ns, with stamps StampsUsable
	senderTTL int    // TTL the reflector received; -1 if unknown
	dscp      int    // DSCP of the reply as received; -1 if unknown
	dscp2     int    // DSCP the reflector received (CoS TLV); -1 if absent
	rtt       int64  // ns, when the protocol had the kernel time the exchange; 0 if not
}

// reflectorFlow is what a stateful reflector told of one flow (one
// reflector session) at the flow's latest answered probe: that probe's
// index within the flow (sequence number / flows) and the reflector's own
// sequence number in its reply, the count of the flow's probes it had
// received before.
type reflectorFlow struct {
	lastIndex, lastReflSeq uint32
	have                   bool // a probe of the flow was answered
}

// onReply accounts for one reply. Each probe is decided at most once;
// anything after that is counted as late or duplicated, never twice.
//
// It returns false for a reply to no probe of the session's ring: one
// never sent (forged or stray) or so old that its slot was reused (sent
// more than window + timeout ago); the caller counts it as unmatched.
func (s *Session) onReply(r *timedReply) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slotLocked(r.seq)
	if sl == nil {
		return false
	}
	switch sl.State {
	case window.Received:
		s.c.Duplicated++
		return true
	case window.Lost:
		if sl.Late {
			s.c.Duplicated++
		} else {
			sl.Late = true
			s.c.Late++
		}
		return true
	}
	if r.t4 < sl.Sent && r.read >= sl.Sent {
		// The kernel's receive timestamp puts the arrival before T1: the
		// wall clock stepped forward between arrival and read (by less than
		// maxReadDelay, or arrival would have caught it). The read time is
		// the next best bound; a step must not turn an answer into a loss.
		r.t4 = r.read
	}
	elapsed := r.t4 - sl.Sent
	if elapsed > s.timeout || r.t4 < sl.Sent {
		sl.Late = true
		s.c.Late++
		s.markLostLocked(sl)
		return true
	}
	rtt := elapsed
	// Kernel timestamps exclude our own scheduling delays; they come from
	// CLOCK_REALTIME, so they are trusted only when consistent with the
	// monotonic measurement, which they can only shorten: a clock step
	// between T1 and T4 falls back to the monotonic RTT. An RTT the kernel
	// measured itself (a TCP handshake's SYN to SYN-ACK) is trusted alike.
	if r.rtt > 0 && r.rtt <= elapsed {
		rtt, s.kernelTS = r.rtt, true
	} else if k := r.rxKernel - sl.TxKernel; sl.TxKernel != 0 && r.rxKernel != 0 && k > 0 && k <= elapsed {
		rtt = k
		s.kernelTS = true
	} else {
		s.kernelTS = false
		s.c.TimestampFallbacks++
	}
	// The reflector's dwell comes from another clock: trust it only when it
	// is smaller than what we measured, so that no RTT is negative.
	dwell := s.proto.ReflectorTimestamps && r.stamps == StampsUsable && r.dwell < rtt
	if dwell {
		rtt -= r.dwell
	} else if s.proto.ReflectorTimestamps && r.stamps != StampsNone {
		s.c.TimestampsInvalid++ // the RTT includes the dwell: say so
	}
	sl.State, sl.RTT = window.Received, rtt
	s.inFlight--
	s.c.Received++
	s.win.LastReceivedSent = max(s.win.LastReceivedSent, sl.Sent)
	s.reorderLocked(r, sl)
	s.hist.Observe(float64(rtt) / 1e9)
	if dwell {
		s.carried.Timestamps = true
		s.dwellHist.Observe(float64(r.dwell) / 1e9)
	}
	s.directionLocked(r, sl)
	s.pathLocked(r)
	s.markDecidedLocked()
	return true
}

// reorderScan bounds how far back a reply looks for earlier-numbered
// replies that arrived after it: reordering deeper than this many probes is
// not counted.
const reorderScan = 64

// epochUnix is epoch in Unix ns: monotonic times plus it approximate the
// kernel's receive timestamps where those are missing.
var epochUnix = epoch.UnixNano()

// reorderLocked counts, once, every reply that arrived after a reply with a
// higher sequence number (RFC 4737 §3.3). Arrival is the kernel's receive
// timestamp where there is one: replies of different flows are read by
// different goroutines, so the order they are processed in is not the order
// they arrived in, and either may come first. In order, neither scan runs.
func (s *Session) reorderLocked(r *timedReply, sl *window.Slot) {
	arr := r.rxKernel
	if arr == 0 {
		arr = epochUnix + r.t4
	}
	sl.Arrival = arr
	if !s.anyReply {
		s.anyReply = true
		s.maxSeq, s.maxArr = r.seq, arr
		return
	}
	if r.seq < s.maxSeq {
		// Did a higher-numbered reply, already processed, arrive first?
		for j := r.seq + 1; j != s.maxSeq+1; j++ {
			if o := s.slotLocked(j); o != nil && o.State == window.Received && o.Arrival < arr {
				s.markReorderedLocked(sl)
				break
			}
		}
	} else {
		s.maxSeq = r.seq
	}
	if arr < s.maxArr {
		// Did lower-numbered replies, already processed, arrive after this one?
		for k, i := r.seq-1, 0; i < reorderScan && k != r.seq; k, i = k-1, i+1 {
			o := s.slotLocked(k)
			if o == nil {
				break
			}
			if o.State == window.Received && o.Arrival > arr {
				s.markReorderedLocked(o)
			}
		}
	}
	s.maxArr = max(s.maxArr, arr)
}

func (s *Session) markReorderedLocked(sl *window.Slot) {
	if !sl.Reordered {
		sl.Reordered = true
		s.c.Reordered++
	}
}

// directionLocked learns where lost probes were lost from a stateful
// reflector, which numbers the probes it received per session (RFC 8762
// §4.3.1). Each flow is its own reflector session (5-tuple), so per flow
// the probes between two answered ones that the reflector did not count
// were lost forward, the others backward.
func (s *Session) directionLocked(r *timedReply, sl *window.Slot) {
	if r.reflSeq != r.seq {
		s.stateful = true // a stateless reflector copies our number
	}
	// The per-flow state is kept from the first reply on, so that the
	// first gaps are attributed even though statefulness shows only later.
	flows := uint32(s.cfg.Flows)
	f := &s.flows[sl.Flow]
	k := r.seq / flows
	if !f.have || r.reflSeq < f.lastReflSeq || k <= f.lastIndex {
		if !f.have || r.reflSeq < f.lastReflSeq {
			*f = reflectorFlow{lastIndex: k, lastReflSeq: r.reflSeq, have: true} // first reply, or the reflector restarted
		}
		return // a reordered reply says nothing new
	}
	gap := k - f.lastIndex - 1                                 // probes of this flow between the two replies
	fwd := min(gap, (k-f.lastIndex)-(r.reflSeq-f.lastReflSeq)) // those the reflector never saw
	if r.reflSeq-f.lastReflSeq > k-f.lastIndex {
		fwd = 0 // duplicates reached the reflector: nothing lost forward
	}
	for i := uint32(1); i <= gap && s.stateful; i++ {
		g := s.slotLocked((f.lastIndex+i)*flows + uint32(sl.Flow))
		if g == nil || g.Dir != window.DirUnknown {
			continue
		}
		g.Dir = window.DirBackward
		if i <= fwd {
			g.Dir = window.DirForward
		}
		if g.State == window.Lost {
			s.countDirectionLocked(g)
			if s.inWindowLocked(g.Seq) {
				s.win.CountDirection(g.Dir, int(g.Flow), 1)
			}
		}
	}
	f.lastIndex, f.lastReflSeq = k, r.reflSeq
}

// pathLocked tracks the forward hop count and DSCP remarking.
func (s *Session) pathLocked(r *timedReply) {
	if r.senderTTL < 0 || !s.proto.SenderTTL {
		// unknown: no hop count
	} else if init := s.pool.initialTTL(s.dst.Addr()); r.senderTTL <= init {
		h := init - r.senderTTL
		if s.hops >= 0 && h != s.hops {
			s.c.HopsChanges++
		}
		s.hops = h
		s.carried.SenderTTL = true
	}
	if r.dscp2 >= 0 && s.proto.ClassOfService {
		s.carried.ClassOfService = true
		s.carried.ReplyDSCP = s.carried.ReplyDSCP || r.dscp >= 0
		// The reflector said what it received: a difference is forward
		// remarking, and it answered with the DSCP we asked for (DSCP1),
		// so a difference on arrival is backward remarking.
		if r.dscp2 != s.cfg.DSCP {
			s.c.DSCPRemarkedForward++
		}
		if r.dscp >= 0 && r.dscp != s.cfg.DSCP {
			s.c.DSCPRemarkedBackward++
		}
	}
}
