//go:build linux

package impair

import (
	"net"

	"golang.org/x/sys/unix"
)

// setDSCP sets the TOS (IPv4) or Traffic Class (IPv6) of the datagrams c
// sends to dscp<<2, or back to the kernel default 0 when dscp is -1. On an
// IPv6 socket it sets IP_TOS as well, which is what Linux uses for
// IPv4-mapped destinations.
func setDSCP(c *net.UDPConn, dscp int) error {
	tos := 0
	if dscp > 0 {
		tos = dscp << 2
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		domain, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = err
			return
		}
		if domain == unix.AF_INET6 {
			serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos)
			_ = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_TOS, tos)
			return
		}
		serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_TOS, tos)
	})
	if err != nil {
		return err
	}
	return serr
}
