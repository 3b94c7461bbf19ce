//go:build !linux || llama_portable

package udpsock

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// Batch returns the I/O of the portable path in BatchConn form: one
// datagram per system call, without control messages.
func (c *Conn) Batch() BatchConn { return portableBatch{c: c.UDPConn, v6: c.v6} }

// portableBatch is a BatchConn over a plain net.UDPConn.
type portableBatch struct {
	c  *net.UDPConn
	v6 bool
}

// errFlags is returned for message flags, which the portable path cannot
// pass to the kernel.
var errFlags = errors.New("udpsock: message flags are not supported on the portable path")

// ReadBatch blocks until one datagram comes, reads it into ms[0], which
// must have exactly one buffer, and returns 1. NN is 0: no control
// messages are read. Flags holds the kernel's (MSG_TRUNC for a datagram
// longer than the buffer). Addr is a new *net.UDPAddr, as golang.org/x/net
// gives, so that a caller may keep it.
func (b portableBatch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if flags != 0 {
		return 0, errFlags
	}
	m := &ms[0]
	if len(m.Buffers) != 1 {
		return 0, fmt.Errorf("udpsock: a message read on the portable path needs one buffer, not %d", len(m.Buffers))
	}
	n, _, kflags, from, err := b.c.ReadMsgUDPAddrPort(m.Buffers[0], nil)
	if err != nil {
		return 0, err
	}
	m.N, m.NN, m.Flags, m.Addr = n, 0, kflags, net.UDPAddrFromAddrPort(from)
	return 1, nil
}

// WriteBatch writes the messages one by one, each with its OOB as given
// (the portable path's AppendSendMeta adds none), and returns how many
// were sent. On the first failure it returns the messages sent before it
// and that message's error: the caller counts that one and goes on with
// the rest. A message of several buffers is sent as one datagram of
// their concatenation.
func (b portableBatch) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	if flags != 0 {
		return 0, errFlags
	}
	for i := range ms {
		n, err := b.write(&ms[i])
		if err != nil {
			return i, err
		}
		ms[i].N = n
	}
	return len(ms), nil
}

// write sends one message; a nil Addr sends to a connected socket's peer.
func (b portableBatch) write(m *ipv4.Message) (int, error) {
	var to netip.AddrPort
	if m.Addr != nil {
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			return 0, fmt.Errorf("udpsock: destination %v is not a *net.UDPAddr", m.Addr)
		}
		to = ua.AddrPort()
		if !b.v6 {
			// Callers fill 16-octet IPs; an IPv4 socket takes only
			// 4-octet addresses.
			to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
		}
	}
	var buf []byte
	if len(m.Buffers) == 1 {
		buf = m.Buffers[0] // the usual case, without a copy
	} else {
		buf = bytes.Join(m.Buffers, nil)
	}
	n, _, err := b.c.WriteMsgUDPAddrPort(buf, m.OOB, to)
	return n, err
}
