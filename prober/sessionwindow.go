package prober

import "github.com/llama-exporter/llama_exporter/prober/internal/window"

// markLostLocked decides sl as lost.
func (s *Session) markLostLocked(sl *window.Slot) {
	sl.State = window.Lost
	s.inFlight--
	s.c.Lost++
	if s.flowLost != nil {
		s.flowLost[sl.Flow]++
	}
	s.countDirectionLocked(sl)
	s.markDecidedLocked()
}

func (s *Session) countDirectionLocked(sl *window.Slot) {
	switch sl.Dir {
	case window.DirForward:
		s.c.ForwardLost++
	case window.DirBackward:
		s.c.BackwardLost++
	}
}

// sweepLocked marks every pending probe older than timeout as lost.
func (s *Session) sweepLocked(now int64) {
	n := uint32(len(s.slots))
	for s.swept != s.next {
		sl := &s.slots[s.swept%n]
		if sl.State == window.Pending {
			if now-sl.Sent <= s.timeout {
				return // later probes were sent later still
			}
			s.markLostLocked(sl)
		}
		s.swept++
	}
}

// slotAt returns the ring slot of sequence number seq.
func (s *Session) slotAt(seq uint32) *window.Slot { return &s.slots[seq%uint32(len(s.slots))] }

// inWindowLocked reports whether probe seq is in the window now.
func (s *Session) inWindowLocked(seq uint32) bool {
	return seq-s.win.Tail < s.win.Head-s.win.Tail
}

// advanceLocked decides timed-out probes and moves the window to now:
// probes sent before now - timeout enter, probes sent before
// now - timeout - window leave, in sequence order.
func (s *Session) advanceLocked(now int64) {
	s.sweepLocked(now)
	end := now - s.timeout
	start := end - s.window
	for s.win.Head != s.next {
		sl := s.slotAt(s.win.Head)
		if sl.Sent >= end {
			break
		}
		s.enterLocked(sl)
		s.win.Head++
	}
	for s.win.Tail != s.win.Head {
		sl := s.slotAt(s.win.Tail)
		if sl.Sent >= start {
			break
		}
		s.leaveLocked(sl)
		s.win.Tail++
	}
}

// enterLocked adds decided probe sl, the next in sequence, to the window,
// with its IPDV against the newest answered probe already there.
func (s *Session) enterLocked(sl *window.Slot) {
	if sl.State == window.Received && s.win.HasNewest {
		s.win.IPDV(s.slotAt(s.win.Newest).RTT, sl.RTT, 1)
	}
	s.win.Enter(sl)
	if s.paths != nil && sl.State == window.Lost {
		s.paths.Lost(int(sl.Flow), sl.Sent)
	}
}

// leaveLocked removes sl, the oldest probe in the window. Finding the next
// answered probe skips lost ones once each, so it is amortised O(1).
func (s *Session) leaveLocked(sl *window.Slot) {
	var next *window.Slot
	if sl.State == window.Received {
		for q := sl.Seq + 1; q != s.win.Head; q++ {
			if c := s.slotAt(q); c.State == window.Received {
				next = c
				break
			}
		}
	}
	s.win.Leave(sl, next)
}

func (s *Session) markDecidedLocked() {
	if !s.isDecided {
		s.isDecided = true
		close(s.decided)
	}
}
