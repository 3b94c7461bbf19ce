// Package procnet reads the kernel's table of UDP sockets, /proc/net/udp
// and /proc/net/udp6 (Linux): each socket's local port, inode and
// receive-buffer drops. The load tool meters the exporter's sockets with
// it, and tests report the drops of theirs.
package procnet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// UDPSocket is one line of /proc/net/udp or /proc/net/udp6.
type UDPSocket struct {
	Port  int    // local port, 0..65535
	Inode uint64 // the socket's inode, as /proc/PID/fd links name it
	Drops uint64 // datagrams dropped because the receive buffer was full
}

// ParseUDP parses the contents of /proc/net/udp (or udp6), header line
// included. A line with a malformed field is an error naming the field.
func ParseUDP(b []byte) ([]UDPSocket, error) {
	var out []UDPSocket
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 13 {
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("/proc/net/udp: bad local address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad port %q", portHex)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad inode %q", f[9])
		}
		drops, err := strconv.ParseUint(f[12], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad drops %q", f[12])
		}
		out = append(out, UDPSocket{Port: int(port), Inode: inode, Drops: drops})
	}
	return out, nil
}

// ReadUDP returns the UDP sockets of both address families in this
// network namespace; a file that cannot be read or parsed is left out
// (udp6 without IPv6).
func ReadUDP() []UDPSocket {
	var out []UDPSocket
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if socks, err := ParseUDP(b); err == nil {
			out = append(out, socks...)
		}
	}
	return out
}

// PortDrops returns the receive-buffer drops of the first UDP socket bound
// to local port port, or -1 when there is none or the table cannot be
// read: for reports and failure messages.
func PortDrops(port uint16) int64 {
	for _, s := range ReadUDP() {
		if s.Port == int(port) {
			return int64(s.Drops)
		}
	}
	return -1
}
