//go:build linux && !llama_portable

package udpsock

import (
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Batch returns the batched I/O of c's family: recvmmsg(2) and
// sendmmsg(2), with control messages.
func (c *Conn) Batch() BatchConn {
	if c.v6 {
		return ipv6.NewPacketConn(c.UDPConn)
	}
	return ipv4.NewPacketConn(c.UDPConn)
}
