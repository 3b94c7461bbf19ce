//go:build linux && !llama_portable

package icmpsock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// pingGroupRange is the sysctl that allows ping sockets to groups.
const pingGroupRange = "/proc/sys/net/ipv4/ping_group_range"

// Listen opens an echo socket of network "udp4" (ICMP) or "udp6" (ICMPv6)
// bound to laddr, whose port, when not 0, is the Identifier to use: a ping
// socket if the process may open one, else a raw socket. o's options are
// set as udpsock.Listen sets them (GRO and ReusePort excepted). When
// neither kind can be opened the error is a *NoSocketError that names
// what is missing; other errors are those of setsockopt(2) and bind(2).
func Listen(network string, laddr netip.AddrPort, o udpsock.Options) (Conn, error) {
	v6 := network == "udp6"
	c, pingErr := listenPing(v6, laddr, o)
	if pingErr == nil {
		return c, nil
	}
	if !refused(pingErr) {
		return nil, pingErr
	}
	c, rawErr := listenRaw(v6, laddr, o)
	if rawErr == nil {
		return c, nil
	}
	if !refused(rawErr) {
		return nil, rawErr
	}
	return nil, noSocket(pingErr, rawErr)
}

// socketError is the failure of socket(2) itself, as opposed to the
// options and the bind that follow.
type socketError struct{ err error }

func (e *socketError) Error() string { return "socket: " + e.err.Error() }
func (e *socketError) Unwrap() error { return e.err }

// refused reports whether err says that this kind of socket cannot be
// opened at all (no permission, no kernel support), so that the other kind
// is worth trying.
func refused(err error) bool {
	var se *socketError
	return errors.As(err, &se)
}

// socket opens an unbound socket of the family v6 says.
func socket(v6 bool, typ int) (int, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, &socketError{err}
	}
	return fd, nil
}

// pingConn is a ping socket.
type pingConn struct{ *udpsock.Conn }

func (pingConn) Kind() Kind { return Ping }

func listenPing(v6 bool, laddr netip.AddrPort, o udpsock.Options) (Conn, error) {
	fd, err := socket(v6, unix.SOCK_DGRAM)
	if err != nil {
		return nil, err
	}
	c, err := udpsock.FromSocket(fd, v6, laddr, o)
	if err != nil {
		return nil, err
	}
	return pingConn{c}, nil
}

// nextIdent numbers the raw sockets' Identifiers: distinct within the
// process, from a random start.
var nextIdent atomic.Uint32

func init() { nextIdent.Store(rand.Uint32()) }

// noSocket explains why neither kind of socket could be opened.
func noSocket(pingErr, rawErr error) *NoSocketError {
	ping := pingErr.Error()
	if errors.Is(pingErr, unix.EACCES) {
		ping = fmt.Sprintf("net.ipv4.ping_group_range%s excludes gid %d", groupRange(), os.Getegid())
		if gs, _ := os.Getgroups(); len(gs) > 0 {
			ping += fmt.Sprintf(" and groups %v", gs)
		}
	}
	raw := rawErr.Error()
	if errors.Is(rawErr, unix.EPERM) || errors.Is(rawErr, unix.EACCES) {
		raw = "CAP_NET_RAW missing"
	}
	return &NoSocketError{msg: fmt.Sprintf("icmp prober: no ping socket (%s) and no raw socket (%s)", ping, raw)}
}

// groupRange returns ` "FIRST LAST"`, the sysctl's value as the calling
// thread's network namespace has it, or "" if it cannot be read.
func groupRange() string {
	b, err := os.ReadFile(pingGroupRange)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" %q", strings.Join(strings.Fields(string(b)), " "))
}
