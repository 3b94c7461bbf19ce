//go:build (aix || darwin || dragonfly || netbsd || openbsd || linux) && (!linux || llama_portable)

package udpsock

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort is a net.ListenConfig Control function that sets SO_REUSEPORT
// before bind.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt SO_REUSEPORT: %w", serr)
	}
	return nil
}
