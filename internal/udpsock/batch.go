package udpsock

import "golang.org/x/net/ipv4"

// BatchConn is the batched I/O of golang.org/x/net's ipv4 and ipv6
// PacketConns (recvmmsg(2) and sendmmsg(2); their Message types are the
// same). On the portable path it moves one datagram per system call:
// ReadBatch returns one message at a time and WriteBatch loops.
type BatchConn interface {
	// ReadBatch reads into ms and returns how many messages it filled.
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	// WriteBatch sends ms in order and returns how many were sent.
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
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
