//go:build linux

package impair

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Go timers fire with a lateness of a few hundred microseconds on some
// machines (the runtime's poller sleeps in whole milliseconds), which is too
// coarse for the delay line. So a delay line sleeps on its time.Timer only
// until coarseMargin before a release time, then with nanosleep(2) until
// spinMargin before it, and covers the rest by yielding in a loop.
const (
	coarseMargin = time.Millisecond
	spinMargin   = 150 * time.Microsecond
)

// packet is one datagram on its way through a direction.
type packet struct {
	f       *flow
	data    []byte
	copies  int       // 1, or 2 when duplicated
	release time.Time // when it is due to be sent
}

// direction is one direction of a relay: the impairment decisions, the
// reordering hold and the delay line with its goroutine.
type direction struct {
	r       *Relay
	forward bool

	mu       sync.Mutex
	imp      Impairment
	rng      *rand.Rand
	queue    []packet // FIFO delay line; queue[head:] are pending
	head     int
	held     packet // held back for reordering when hasHeld
	hasHeld  bool
	heldTill time.Time // when a held packet is flushed on its own

	wake chan struct{} // poked (without blocking) when state changes

	received, sent, dropped, duplicated, reordered, outOfOrder atomic.Uint64

	// Owned by the delay line goroutine: the highest sequence number sent.
	maxSeq  uint32
	seenSeq bool
}

func newDirection(r *Relay, forward bool, im Impairment, rng *rand.Rand) *direction {
	return &direction{r: r, forward: forward, imp: im, rng: rng, wake: make(chan struct{}, 1)}
}

func (d *direction) set(im Impairment) {
	d.mu.Lock()
	d.imp = im
	d.mu.Unlock()
	d.poke()
}

func (d *direction) counts() Counts {
	return Counts{
		Received:   d.received.Load(),
		Sent:       d.sent.Load(),
		Dropped:    d.dropped.Load(),
		Duplicated: d.duplicated.Load(),
		Reordered:  d.reordered.Load(),
		OutOfOrder: d.outOfOrder.Load(),
	}
}

func (d *direction) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// input takes one received datagram of flow f through the loss,
// duplication and reordering decisions into the delay line.
func (d *direction) input(f *flow, data []byte) {
	d.received.Add(1)
	d.mu.Lock()
	im := d.imp
	if im.Loss > 0 && d.rng.Float64() < im.Loss {
		d.mu.Unlock()
		d.dropped.Add(1)
		return
	}
	p := packet{f: f, data: data, copies: 1}
	if im.Duplicate > 0 && d.rng.Float64() < im.Duplicate {
		p.copies = 2
		d.duplicated.Add(1)
	}
	now := time.Now()
	release := now.Add(im.Delay)
	switch {
	case d.hasHeld:
		h := d.held
		d.held, d.hasHeld = packet{}, false
		d.push(p, release)
		d.push(h, release)
		d.reordered.Add(1)
	case im.Reorder > 0 && d.rng.Float64() < im.Reorder:
		d.held, d.hasHeld = p, true
		d.heldTill = now.Add(ReorderFlush)
	default:
		d.push(p, release)
	}
	d.mu.Unlock()
	d.poke()
}

// push appends p to the delay line. d.mu must be held.
func (d *direction) push(p packet, release time.Time) {
	p.release = release
	if d.head > 0 && d.head >= len(d.queue)/2 {
		// Reuse the consumed front of the slice.
		n := copy(d.queue, d.queue[d.head:])
		clear(d.queue[n:])
		d.queue = d.queue[:n]
		d.head = 0
	}
	d.queue = append(d.queue, p)
}

// run is the delay line goroutine: it sends every packet at its release
// time and flushes a held packet that waited ReorderFlush.
func (d *direction) run() {
	defer d.r.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var due []packet
	for {
		d.mu.Lock()
		now := time.Now()
		if d.hasHeld && !now.Before(d.heldTill) {
			d.push(d.held, d.heldTill.Add(d.imp.Delay))
			d.held, d.hasHeld = packet{}, false
		}
		for d.head < len(d.queue) && !d.queue[d.head].release.After(now) {
			due = append(due, d.queue[d.head])
			d.queue[d.head] = packet{}
			d.head++
		}
		var next time.Time
		if d.head < len(d.queue) {
			next = d.queue[d.head].release
		}
		if d.hasHeld && (next.IsZero() || d.heldTill.Before(next)) {
			next = d.heldTill
		}
		dscp := d.imp.DSCP
		d.mu.Unlock()

		if len(due) > 0 {
			for i := range due {
				d.send(due[i], dscp)
				due[i] = packet{}
			}
			due = due[:0]
			continue
		}

		var fire <-chan time.Time
		if !next.IsZero() {
			wait := time.Until(next)
			if wait <= coarseMargin {
				if d.r.stopped() {
					return
				}
				waitPrecisely(next)
				continue
			}
			timer.Reset(wait - coarseMargin)
			fire = timer.C
		}
		select {
		case <-d.r.done:
			timer.Stop()
			return
		case <-d.wake:
		case <-fire:
		}
	}
}

// waitPrecisely returns at t, which is at most about coarseMargin away.
func waitPrecisely(t time.Time) {
	for {
		left := time.Until(t)
		switch {
		case left <= 0:
			return
		case left > spinMargin:
			ts := unix.NsecToTimespec(int64(left - spinMargin))
			_ = unix.Nanosleep(&ts, nil)
		default:
			runtime.Gosched()
		}
	}
}

// send writes the copies of p with the given DSCP and counts them.
func (d *direction) send(p packet, dscp int) {
	if f := d.r.seqOf.Load(); f != nil {
		if seq, ok := (*f)(p.data); ok {
			switch {
			case d.seenSeq && seq < d.maxSeq:
				d.outOfOrder.Add(1)
			case !d.seenSeq || seq > d.maxSeq:
				d.maxSeq, d.seenSeq = seq, true
			}
		}
	}
	for range p.copies {
		var err error
		if d.forward {
			err = d.r.sendForward(p.f, p.data, dscp)
		} else {
			err = d.r.sendBackward(p.f, p.data, dscp)
		}
		if err == nil {
			d.sent.Add(1)
		}
	}
}
