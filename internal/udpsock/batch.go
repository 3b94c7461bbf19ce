package udpsock

import (
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// BatchConn is the batched I/O of golang.org/x/net's ipv4 and ipv6
// PacketConns (recvmmsg(2) and sendmmsg(2); their Message types are the
// same).
type BatchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Batch returns the batched I/O of c's family.
func (c *Conn) Batch() BatchConn {
	if c.v6 {
		return ipv6.NewPacketConn(c.UDPConn)
	}
	return ipv4.NewPacketConn(c.UDPConn)
}

// NewReadBatch returns n messages for BatchConn.ReadBatch, each with its
// own size-octet buffer (Buffers[0]) and OOBSize-octet control buffer,
// allocated once so that reading does not allocate them again.
func NewReadBatch(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i] = ipv4.Message{Buffers: [][]byte{make([]byte, size)}, OOB: make([]byte, OOBSize)}
	}
	return ms
}
