package clockstatus

import (
	"time"

	"golang.org/x/sys/unix"
)

// phaseLimit is the error the kernel states when it knows nothing (at boot,
// after a step, or past 16 s of drift): NTP_PHASE_LIMIT, 16 s.
const phaseLimit = 16 * time.Second

// readKernel reads the clock discipline with adjtimex(2), no modes (no
// privileges needed): synchronised while STA_UNSYNC is clear. The error is
// esterror, the kernel's estimate, unless a daemon never writes it (PTP's
// phc2sys leaves it at 16 s); then maxerror, its bound, if that is below
// 16 s. At least 1 µs, the field's unit.
func readKernel() kernelStatus {
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		return kernelStatus{}
	}
	k := kernelStatus{synced: tx.Status&unix.STA_UNSYNC == 0}
	est, maxErr := time.Duration(tx.Esterror)*time.Microsecond, time.Duration(tx.Maxerror)*time.Microsecond
	switch {
	case est > 0 && est < phaseLimit:
		k.err = est
	case maxErr > 0 && maxErr < phaseLimit:
		k.err = maxErr
	case k.synced:
		k.err = time.Microsecond // timesyncd writes 0 for both
	default:
		k.err = phaseLimit
	}
	return k
}
