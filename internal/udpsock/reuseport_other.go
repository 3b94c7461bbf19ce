//go:build !(aix || darwin || dragonfly || freebsd || netbsd || openbsd || linux)

package udpsock

import (
	"errors"
	"syscall"
)

// reusePort fails: this platform has no SO_REUSEPORT that udpsock knows of.
func reusePort(_, _ string, _ syscall.RawConn) error {
	return errors.New("udpsock: SO_REUSEPORT is not available on this platform")
}
