package udpsock

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort is a net.ListenConfig Control function that sets
// SO_REUSEPORT_LB (FreeBSD 12) before bind: plain SO_REUSEPORT lets the
// sockets share the port but delivers every unicast datagram to one of
// them, where SO_REUSEPORT_LB spreads flows over them as Linux does.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT_LB, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt SO_REUSEPORT_LB: %w", serr)
	}
	return nil
}
