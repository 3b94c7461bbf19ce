package reflector

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// Limits of one UDP GSO send (UDP_SEGMENT): the kernel takes at most 64
// datagrams per buffer (UDP_MAX_SEGMENTS before Linux 6.10), and a
// datagram may not need IP fragmentation on the way out, which the
// reflector cannot know; replies up to maxGSOSegment octets fit a
// 1500-octet MTU with IPv6 and UDP headers. Larger replies are sent one by
// one.
const (
	maxSegments   = 64
	maxGSOSegment = 1500 - 40 - 8
)

// replyBatch collects the replies to one read batch into at most batchSize
// messages for one sendmmsg(2). Consecutive replies that can leave as one
// UDP GSO buffer (same destination, source, TOS and size, the last possibly
// shorter) share a message: the kernel then builds, routes and hands over
// one buffer per train instead of one per reply, which is most of the cost
// of reflecting a datagram.
type replyBatch struct {
	conn   *udpsock.Conn
	msgs   []ipv4.Message
	addrs  []net.UDPAddr
	trains []train
	k      int  // messages in use
	gso    bool // UDP GSO is used on this socket; off after the device refused it
	logger *slog.Logger

	split []ipv4.Message // one message per datagram when a train is refused
}

// train describes the replies in one message of a replyBatch.
type train struct {
	to      netip.AddrPort
	src     netip.Addr
	ifIndex int
	tos     int
	seg     int  // octets of each reply but the last
	n       int  // replies
	stamp   bool // STAMP replies, whose T3 is still to be written; false: legacy echoes
	closed  bool // the last reply was shorter than seg: nothing may follow it
	oobLen  int  // octets of control messages before UDP_SEGMENT
}

func newReplyBatch(c *udpsock.Conn, logger *slog.Logger) *replyBatch {
	b := &replyBatch{
		conn:   c,
		msgs:   make([]ipv4.Message, batchSize),
		addrs:  make([]net.UDPAddr, batchSize),
		trains: make([]train, batchSize),
		gso:    c.GSO(), // the portable socket layer has none
		logger: logger,
		split:  make([]ipv4.Message, maxSegments),
	}
	for i := range b.msgs {
		b.addrs[i].IP = make(net.IP, net.IPv6len)
		b.msgs[i] = ipv4.Message{
			Buffers: [][]byte{make([]byte, 0, maxDatagram)},
			OOB:     make([]byte, 0, udpsock.SendOOBSize),
			Addr:    &b.addrs[i],
		}
	}
	return b
}

// add appends a reply that must leave from src (invalid: the socket's
// address) on interface ifIndex with TOS tos (-1: the socket's default) to
// to. It copies reply. It reports false, adding nothing, when the batch is
// full: flush it, then add again.
func (b *replyBatch) add(reply []byte, to netip.AddrPort, src netip.Addr, ifIndex, tos int, isSTAMP bool) bool {
	if b.k > 0 {
		t, m := &b.trains[b.k-1], &b.msgs[b.k-1]
		buf := m.Buffers[0]
		if b.gso && !t.closed && t.to == to && t.src == src && t.ifIndex == ifIndex && t.tos == tos &&
			t.stamp == isSTAMP && len(reply) <= t.seg && t.seg <= maxGSOSegment &&
			t.n < maxSegments && len(buf)+len(reply) <= maxDatagram {
			m.Buffers[0] = append(buf, reply...)
			if t.n == 1 {
				m.OOB = udpsock.AppendSegmentSize(m.OOB, t.seg)
			}
			t.n++
			t.closed = len(reply) < t.seg
			return true
		}
	}
	if b.k == len(b.msgs) {
		return false
	}
	m := &b.msgs[b.k]
	m.Buffers[0] = append(m.Buffers[0][:0], reply...)
	m.OOB = b.conn.AppendSendMeta(m.OOB[:0], src, ifIndex, tos)
	a16 := to.Addr().As16()
	copy(b.addrs[b.k].IP, a16[:])
	b.addrs[b.k].Port = int(to.Port())
	b.trains[b.k] = train{to: to, src: src, ifIndex: ifIndex, tos: tos, seg: len(reply), n: 1, stamp: isSTAMP, oobLen: len(m.OOB)}
	b.k++
	return true
}

// stampT3 writes T3 into every STAMP reply of the batch at octet offset t3At
// and, in authenticated mode, seals it (RFC 8762 §4.3: T3 is taken as late
// as possible, once for the whole batch).
func (b *replyBatch) stampT3(t3 stamp.Timestamp, t3At int, auth *stamp.Authenticator) {
	for i := range b.k {
		t := &b.trains[i]
		if !t.stamp {
			continue // a legacy probe goes back as it came
		}
		buf := b.msgs[i].Buffers[0]
		for off := 0; off < len(buf); off += t.seg {
			reply := buf[off:min(off+t.seg, len(buf))]
			binary.BigEndian.PutUint64(reply[t3At:t3At+8], uint64(t3))
			if auth != nil {
				auth.Seal(reply)
			}
		}
	}
}

// flush sends the batch and empties it. It returns the replies sent and
// the replies the kernel refused; one refused destination does not cost
// the rest of the batch.
func (b *replyBatch) flush(bc udpsock.BatchConn) (sent, failed int) {
	for i := 0; i < b.k; {
		w, err := bc.WriteBatch(b.msgs[i:b.k], 0)
		w = max(w, 0) // -1 with the error of the first message
		for _, t := range b.trains[i : i+w] {
			sent += t.n
		}
		i += w
		if i >= b.k || (err == nil && w > 0) {
			continue
		}
		// The kernel refused the message at i.
		if t := &b.trains[i]; t.n == 1 {
			b.logger.Debug("reflector write", "err", err)
			failed++
		} else {
			if errors.Is(err, syscall.EIO) {
				b.gso = false // the device cannot checksum GSO buffers
				b.logger.Info("reflector: the kernel refused UDP GSO; replies now leave one by one", "err", err)
			}
			s, f := b.sendSplit(bc, i)
			sent, failed = sent+s, failed+f
		}
		i++
	}
	b.k = 0
	return sent, failed
}

// sendSplit sends the train of message i one datagram per message.
func (b *replyBatch) sendSplit(bc udpsock.BatchConn, i int) (sent, failed int) {
	t, m := &b.trains[i], &b.msgs[i]
	buf := m.Buffers[0]
	ms := b.split[:0]
	for off := 0; off < len(buf); off += t.seg {
		ms = append(ms, ipv4.Message{Buffers: [][]byte{buf[off:min(off+t.seg, len(buf))]}, OOB: m.OOB[:t.oobLen], Addr: m.Addr})
	}
	for j := 0; j < len(ms); {
		w, err := bc.WriteBatch(ms[j:], 0)
		w = max(w, 0)
		sent, j = sent+w, j+w
		if j < len(ms) && (err != nil || w == 0) {
			b.logger.Debug("reflector write", "err", err)
			failed, j = failed+1, j+1
		}
	}
	return sent, failed
}
