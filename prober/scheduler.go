package prober

import (
	"math/rand/v2"
	"sync"
	"time"
)

// maxTick is the scheduler's coarsest resolution: after a round it sleeps
// at least one tick, and a round sends every probe due by then, batched per
// socket. A probe leaves at most a tick late (its T1 is timestamped when it
// does), and the process wakes at most 1/tick times a second however many
// sessions it runs. The tick is finer (a quarter of the shortest interval)
// when a module probes faster, so that no session is slowed down.
const maxTick = 5 * time.Millisecond

// scheduler is the one timing loop of the process: a min-heap of sessions by
// next due time (monotonic ns) and a single timer, instead of a timer or a
// goroutine per session.
type scheduler struct {
	send func(due []*Session)
	// onRound, when set, is called after every round, and rounds then run
	// at least once a tick while there are sessions, so that replies read
	// once per round (see roundSignal) wait at most a tick.
	onRound func()

	mu   sync.Mutex
	h    sessionHeap
	tick time.Duration // min(maxTick, shortest interval / 4)
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newScheduler(send func([]*Session)) *scheduler {
	return &scheduler{send: send, tick: maxTick, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// add schedules s: its first probe at once (so a first scrape is answered
// quickly), the following ones from a random phase within one interval so
// that sessions started together do not probe in bursts.
func (sc *scheduler) add(s *Session) {
	sc.mu.Lock()
	sc.tick = max(min(sc.tick, time.Duration(s.interval)/4), 10*time.Microsecond)
	sc.h.push(heapEntry{due: mono(), s: s})
	sc.mu.Unlock()
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// run is the scheduling loop; it returns after close.
func (sc *scheduler) run() {
	defer close(sc.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*Session
	for {
		sc.mu.Lock()
		now := mono()
		due = due[:0]
		for len(sc.h) > 0 {
			e := &sc.h[0]
			if e.due > now {
				break
			}
			s := e.s
			if s.closed.Load() {
				sc.h.pop()
				continue
			}
			due = append(due, s)
			if !s.phased {
				// After the first probe: a random phase within one interval.
				s.phased = true
				e.due = now + 1 + rand.Int64N(s.interval)
			} else {
				e.due += s.interval
			}
			if e.due <= now {
				// Fell behind (a stalled process): skip the missed slots
				// rather than sending them in a burst.
				e.due = now + s.interval
			}
			sc.h.down(0)
		}
		wait := time.Duration(-1)
		if len(sc.h) > 0 {
			wait = max(time.Duration(sc.h[0].due-now), sc.tick)
			if sc.onRound != nil {
				wait = sc.tick
			}
		}
		sc.mu.Unlock()
		if len(due) > 0 {
			sc.send(due)
			clear(due) // let closed sessions go
		}
		if sc.onRound != nil {
			sc.onRound()
		}
		if wait >= 0 {
			t.Reset(wait)
		}
		select {
		case <-sc.stop:
			return
		case <-sc.wake:
		case <-t.C: // Go 1.23 timers: Reset drops a stale fire, no drain needed
		}
	}
}

func (sc *scheduler) close() {
	close(sc.stop)
	<-sc.done
}

// heapEntry is a session and its next due time (monotonic ns), kept in the
// heap itself so that ordering never touches the sessions' memory.
type heapEntry struct {
	due int64
	s   *Session
}

// sessionHeap is a binary min-heap of sessions by due time.
type sessionHeap []heapEntry

func (h *sessionHeap) push(e heapEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

// pop removes the first entry.
func (h *sessionHeap) pop() {
	old := *h
	n := len(old) - 1
	old[0] = old[n]
	old[n] = heapEntry{} // let the session go
	*h = old[:n]
	h.down(0)
}

func (h sessionHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= h[i].due {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h sessionHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].due < h[c].due {
			c = r
		}
		if h[i].due <= h[c].due {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
