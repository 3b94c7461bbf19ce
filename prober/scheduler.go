package prober

import (
	"container/heap"
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
	s.due = mono()
	sc.tick = max(min(sc.tick, time.Duration(s.interval)/4), 10*time.Microsecond)
	heap.Push(&sc.h, s)
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
			s := sc.h[0]
			if s.closed.Load() {
				heap.Pop(&sc.h)
				continue
			}
			if s.due > now {
				break
			}
			due = append(due, s)
			if !s.phased {
				// After the first probe: a random phase within one interval.
				s.phased = true
				s.due = now + 1 + rand.Int64N(s.interval)
			} else {
				s.due += s.interval
			}
			if s.due <= now {
				// Fell behind (a stalled process): skip the missed slots
				// rather than sending them in a burst.
				s.due = now + s.interval
			}
			heap.Fix(&sc.h, 0)
		}
		wait := time.Duration(-1)
		if len(sc.h) > 0 {
			wait = max(time.Duration(sc.h[0].due-now), sc.tick)
		}
		sc.mu.Unlock()
		if len(due) > 0 {
			sc.send(due)
			clear(due) // let closed sessions go
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

// sessionHeap orders sessions by due time.
type sessionHeap []*Session

func (h sessionHeap) Len() int           { return len(h) }
func (h sessionHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h sessionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *sessionHeap) Push(x any) {
	s := x.(*Session)
	s.heapIndex = len(*h)
	*h = append(*h, s)
}
func (h *sessionHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.heapIndex = -1
	return s
}
