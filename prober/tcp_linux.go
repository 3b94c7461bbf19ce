package prober

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setOSOptions limits a handshake's socket to one SYN retransmission
// (TCP_SYNCNT): the handshake is cancelled at the module's timeout anyway,
// and one whose SYN was retransmitted counts as lost.
func setOSOptions(fd int) error {
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1)
}

// kernelRTT reads a connected socket's TCP_INFO: the kernel's RTT sample
// of the SYN and its SYN-ACK (tcpi_rtt, µs; its first sample is the
// smoothed RTT), and whether the SYN was retransmitted. ok is false when
// TCP_INFO has no sample.
func kernelRTT(c *net.TCPConn) (rtt time.Duration, retransmitted, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false, false
	}
	if info.Total_retrans > 0 || info.Retransmits > 0 {
		return 0, true, false
	}
	return time.Duration(info.Rtt) * time.Microsecond, false, info.Rtt > 0
}
