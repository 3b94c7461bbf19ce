package prober

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// slotLimit bounds how many things are in flight at once, without
// waiting: a probe that finds no slot is not started.
type slotLimit struct {
	n   atomic.Int64
	max int64
}

// acquire takes a slot, or reports false when all are taken.
func (l *slotLimit) acquire() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

// release gives back a slot that acquire took.
func (l *slotLimit) release() { l.n.Add(-1) }

func (l *slotLimit) inUse() int64 { return l.n.Load() }
func (l *slotLimit) limit() int64 { return l.max }

// handshakeSlots bounds the TCP handshakes in flight in the process, each
// of which holds a socket, to half the file descriptors it may open (Go
// raises the soft limit to the hard one at start), between 64 and 65536.
// The flow ports are fixed, so handshakes use no ephemeral ports.
var handshakeSlots = &slotLimit{max: handshakeLimit()}

func handshakeLimit() int64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int64(min(max(uint64(rl.Cur)/2, 64), 65536))
}
