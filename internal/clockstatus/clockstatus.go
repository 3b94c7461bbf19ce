// Package clockstatus says what this host can claim of its clock in the
// Error Estimate of the STAMP packets it sends (RFC 8762 §4.2.1, RFC 4656
// §4.1.2): whether an external source keeps the clock synchronised to UTC
// (the S bit), and how large its error may be.
//
// On Linux the answer comes from the kernel's clock discipline, as
// perfSONAR's owamp reads it: adjtimex(2) with no modes, synchronised while
// STA_UNSYNC is clear, the error its estimated error (esterror). Elsewhere
// the clock is said not to be synchronised. An operator whose PTP daemon
// does not update the kernel's status overrides it (Mode).
//
// The status is read at most once a second by a background goroutine and
// served from an atomic value: reading it costs a load, never a system
// call, on the per-packet path.
package clockstatus

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// Mode is what an operator states of this host's clock.
type Mode int

// Modes of --clock.synchronized.
const (
	// Auto reads the kernel's clock discipline.
	Auto Mode = iota
	// Synchronized says the clock is synchronised whatever the kernel
	// says, for hosts whose PTP daemon keeps the clock but not the
	// kernel's status; the error is still the kernel's where it is sane.
	Synchronized
	// Unsynchronized says the clock is not synchronised.
	Unsynchronized
)

// ParseMode parses "auto", "true" or "false"; any other value is an error
// naming it.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return Auto, nil
	case "true":
		return Synchronized, nil
	case "false":
		return Unsynchronized, nil
	}
	return Auto, fmt.Errorf("clock synchronisation %q: want auto, true or false", s)
}

// Refresh is how often the status is read again.
const Refresh = time.Second

// unsyncedError is the error stated by a clock known to nothing better:
// the Error Estimate this exporter sent before it read the kernel's.
const unsyncedError = time.Millisecond

// kernelStatus is what the kernel says of the clock: synchronised or not,
// and the error it estimates (0 when it says nothing).
type kernelStatus struct {
	synced bool
	err    time.Duration
}

var (
	current atomic.Uint32 // a stamp.ErrorEstimate
	mu      sync.Mutex
	stop    chan struct{}
)

func init() { current.Store(uint32(estimate(Unsynchronized, kernelStatus{}))) }

// ErrorEstimate returns the Error Estimate to send now. Safe for
// concurrent use; it does not allocate.
func ErrorEstimate() stamp.ErrorEstimate { return stamp.ErrorEstimate(current.Load()) }

// Start reads the status now, then once every Refresh until Stop, for
// ErrorEstimate to return. Starting again replaces the mode.
func Start(m Mode) {
	mu.Lock()
	defer mu.Unlock()
	if stop != nil {
		close(stop)
	}
	stop = make(chan struct{})
	current.Store(uint32(estimate(m, readKernel())))
	go refresh(m, stop)
}

// Stop ends the refreshing; ErrorEstimate keeps its last value.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if stop != nil {
		close(stop)
		stop = nil
	}
}

func refresh(m Mode, stop <-chan struct{}) {
	t := time.NewTicker(Refresh)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			current.Store(uint32(estimate(m, readKernel())))
		}
	}
}

// estimate is the Error Estimate that mode m and the kernel's status k
// state: S from m (from k under Auto), the error from k where it gave one,
// else unsyncedError.
func estimate(m Mode, k kernelStatus) stamp.ErrorEstimate {
	synced := k.synced
	switch m {
	case Synchronized:
		synced = true
	case Unsynchronized:
		synced = false
	}
	err := k.err
	if err <= 0 {
		err = unsyncedError
	}
	return stamp.NewErrorEstimate(synced, err)
}
