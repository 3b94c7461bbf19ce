package prober

import "sync"

// roundSignal tells the flow sockets' receive loops that the scheduler
// finished a round. With kernel receive timestamps a reply's arrival time
// does not depend on when it is read, so the loops read once per round,
// a batch at a time, instead of waking up for every reply: at 10,000
// probes/s that is a few hundred wake-ups a second instead of thousands.
type roundSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newRoundSignal() *roundSignal { return &roundSignal{ch: make(chan struct{})} }

// next returns a channel that is closed at the end of the next round.
func (r *roundSignal) next() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ch
}

// broadcast ends the current round, waking every waiter.
func (r *roundSignal) broadcast() {
	r.mu.Lock()
	close(r.ch)
	r.ch = make(chan struct{})
	r.mu.Unlock()
}
