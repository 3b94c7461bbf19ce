package prober

import (
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// sendBatch is how many probes one sendmmsg(2) carries per flow socket.
const sendBatch = 64

// outBatch is a flow socket's probes of one scheduler round, written with
// one sendmmsg(2). It belongs to the scheduler goroutine; its buffers are
// allocated once.
type outBatch struct {
	bc    udpsock.BatchConn
	msgs  []ipv4.Message
	bufs  [][]byte
	addrs []net.UDPAddr
	meta  []txPending // the session and sequence number of each message
	n     int
}

func newOutBatch(c *flowConn, maxSize int) *outBatch {
	b := &outBatch{
		msgs:  make([]ipv4.Message, sendBatch),
		bufs:  make([][]byte, sendBatch),
		addrs: make([]net.UDPAddr, sendBatch),
		meta:  make([]txPending, sendBatch),
		bc:    c.Batch(),
	}
	for i := range sendBatch {
		b.bufs[i] = make([]byte, maxSize)
		b.addrs[i].IP = make(net.IP, net.IPv6len)
		b.msgs[i] = ipv4.Message{Buffers: [][]byte{nil}, Addr: &b.addrs[i]}
	}
	return b
}

// queue encodes probe seq of s to dst, sent at t1 (Unix ns), as the next
// message of fc's batch, flushing first when the batch is full.
func (m *Manager) queue(fc *flowConn, s *Session, seq uint32, flow int, dst netip.AddrPort, t1 int64) {
	b := fc.out
	if b.n == sendBatch {
		m.flush(fc)
	}
	if b.n == 0 {
		m.dirty = append(m.dirty, fc)
	}
	buf, ok := m.encode(s, seq, flow, dst, t1, b.bufs[b.n][:s.cfg.PacketSize+s.pool.proto.HeaderLen])
	if !ok {
		return
	}
	a16 := dst.Addr().As16()
	copy(b.addrs[b.n].IP, a16[:])
	b.addrs[b.n].Port = int(dst.Port())
	b.msgs[b.n].Buffers[0] = buf
	b.meta[b.n] = txPending{s: s, seq: seq}
	b.n++
}

// flush writes fc's batch and collects its kernel transmit timestamps. A
// message the kernel refuses (ENETUNREACH, EPERM, …) is counted as a send
// error, its probe stays sent and will be lost, and the rest go on.
func (m *Manager) flush(fc *flowConn) {
	b := fc.out
	fc.sendMu.Lock()
	retried := false
	for from := 0; from < b.n; {
		// The socket numbers every datagram it sends (OPT_ID): register the
		// keys the messages will get before the kernel can report them.
		fc.mu.Lock()
		for i := from; i < b.n; i++ {
			p := b.meta[i]
			p.key = fc.sends + uint32(i-from)
			fc.pending[p.key%txRing] = p
		}
		fc.mu.Unlock()
		w, err := b.bc.WriteBatch(b.msgs[from:b.n], 0)
		w = max(w, 0)
		fc.mu.Lock()
		fc.sends += uint32(w)
		fc.mu.Unlock()
		from += w
		if err != nil && from < b.n && fc.icmpErrors && (w > 0 || !retried) {
			// An ICMP error the socket reported (IP_RECVERR) refused the
			// send without sending: once more.
			retried = true
			continue
		}
		retried = false
		if err != nil && from < b.n {
			s := b.meta[from].s
			m.metrics.sendErrors.WithLabelValues(s.Module).Inc()
			m.logger.Debug("probe send failed", "module", s.Module, "target", s.Target, "err", err)
			from++
		}
	}
	fc.sendMu.Unlock()
	b.n = 0
	fc.drainTx()
}

// sendRound is the scheduler's callback: one probe of each session in
// due, at monotonic time now, batched per flow socket.
func (m *Manager) sendRound(due []*Session) {
	for _, s := range due {
		// Each probe its own clock reading: the T1 it carries tells its
		// reply from those of other sessions to the same address.
		now := time.Now()
		t1 := now.UnixNano()
		seq, flow, dst := s.recordSendAt(int64(now.Sub(epoch)), t1)
		if start := s.pool.proto.Start; start != nil {
			start(s.pool, s, seq, flow, dst)
			continue
		}
		conns, err := s.pool.sockets(family(dst.Addr()))
		if err != nil {
			m.metrics.sendErrors.WithLabelValues(s.Module).Inc()
			continue
		}
		m.queue(conns[flow], s, seq, flow, dst, t1)
	}
	for _, fc := range m.dirty {
		m.flush(fc)
	}
	clear(m.dirty)
	m.dirty = m.dirty[:0]
}

// encode writes probe seq of s to dst, sent at t1 (Unix ns), into buf
// (PacketSize + HeaderLen octets) with the module's protocol and returns
// the datagram.
func (m *Manager) encode(s *Session, seq uint32, flow int, dst netip.AddrPort, t1 int64, buf []byte) ([]byte, bool) {
	p := &m.probe // reused: through the interface it escapes
	*p = Probe{SSID: uint16(s.ssid.Load()), Seq: seq, Flow: flow, DSCP: s.cfg.DSCP, IPv6: family(dst.Addr()) == 1, T1: t1}
	out, err := s.pool.enc.Encode(buf, p)
	if err != nil {
		m.logger.Error("encoding a probe", "module", s.Module, "prober", s.cfg.Prober, "err", err)
		return nil, false
	}
	return out, true
}
