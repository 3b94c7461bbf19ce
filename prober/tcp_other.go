//go:build !linux

package prober

import (
	"net"
	"time"
)

// setOSOptions sets nothing: TCP_SYNCNT is Linux's. A handshake is
// cancelled at the module's timeout, and one that took longer than the
// initial RTO (a retransmitted SYN) counts as lost.
func setOSOptions(int) error { return nil }

// kernelRTT has no kernel sample here: handshakes are timed by their
// connect time.
func kernelRTT(*net.TCPConn) (rtt time.Duration, retransmitted, ok bool) { return 0, false, false }
