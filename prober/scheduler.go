package prober

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"time"
)

// scheduler is the one timing loop of the process: a min-heap of sessions by
// next due time (monotonic ns) and a single timer, instead of a timer or a
// goroutine per session.
type scheduler struct {
	send func(s *Session, now int64)

	mu   sync.Mutex
	h    sessionHeap
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newScheduler(send func(*Session, int64)) *scheduler {
	return &scheduler{send: send, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// add schedules s: its first probe at once (so a first scrape is answered
// quickly), the following ones from a random phase within one interval so
// that sessions started together do not probe in bursts.
func (sc *scheduler) add(s *Session) {
	sc.mu.Lock()
	s.due = mono()
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
	for {
		sc.mu.Lock()
		var wait time.Duration = -1
		var s *Session
		now := mono()
		switch {
		case len(sc.h) == 0:
		case sc.h[0].closed.Load():
			heap.Pop(&sc.h)
			sc.mu.Unlock()
			continue
		case sc.h[0].due > now:
			wait = time.Duration(sc.h[0].due - now)
		default:
			s = sc.h[0]
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
		sc.mu.Unlock()
		if s != nil {
			sc.send(s, now)
			continue
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
