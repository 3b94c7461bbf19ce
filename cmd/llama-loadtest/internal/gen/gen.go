//go:build linux

// Package gen is the load tool's UDP load generator: sockets that each keep
// a window of probes outstanding towards one reflector, matched to their
// replies by sequence number, with batched (and optionally GSO) sends and
// busy-polled receives, counting what came back and sampling RTTs.
package gen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// ReplyKind says where a reply carries the probe's sequence number.
type ReplyKind int

const (
	// ReplyEcho: the datagram comes back unchanged (plain UDP echo), so the
	// sequence number is the sender's, at offset 0.
	ReplyEcho ReplyKind = iota
	// ReplySTAMP: a Session-Reflector packet; the sender's sequence number
	// is the Session-Sender Sequence Number at offset 24.
	ReplySTAMP
)

// String is "echo" or "stamp".
func (k ReplyKind) String() string {
	if k == ReplyEcho {
		return "echo"
	}
	return "stamp"
}

// SenderSequence extracts the sequence number of the probe a reply answers.
func SenderSequence(k ReplyKind, b []byte) (uint32, bool) {
	if k == ReplyEcho {
		var p stamp.SenderPacket
		if p.UnmarshalBinary(b) != nil {
			return 0, false
		}
		return p.Sequence, true
	}
	var p stamp.ReflectorPacket
	if p.UnmarshalBinary(b) != nil {
		return 0, false
	}
	return p.SenderSequence, true
}

// Config is the closed-loop load generator's configuration.
type Config struct {
	Target      netip.AddrPort
	Kind        ReplyKind
	Sockets     int           // K
	Window      int           // W outstanding probes per socket
	PacketSize  int           // UDP payload, >= 44
	LossTimeout time.Duration // an unanswered probe is replaced after this
	SampleEvery int           // keep the RTT of one reply in this many
	// Poll: busy-poll the sockets (non-blocking recvmmsg, yielding to the
	// other sockets' goroutines when empty) instead of sleeping in the
	// netpoller, so that no reply has to wake the generator up.
	Poll bool
	// GSO: send a batch of probes as one UDP_SEGMENT write (Linux UDP
	// GSO): the generator pays for one route lookup and one skb per batch
	// instead of per probe. Loopback delivers the train whole: a reflector
	// socket with UDP_GRO reads it as one buffer, any other socket one
	// datagram per probe.
	GSO bool
	// Rate caps the probes sent per second over all sockets; 0 leaves
	// the loop closed, as fast as the reflector answers.
	Rate float64
}

// gsoMaxSegments is the most datagrams sent in one GSO write (the kernel's
// UDP_MAX_SEGMENTS is 64 on older kernels, 128 on newer ones).
const gsoMaxSegments = 64

const (
	ringBits = 17 // per socket: probes that can be remembered for matching
	ringSize = 1 << ringBits
	ringMask = ringSize - 1
)

const (
	slotEmpty uint8 = iota
	slotOutstanding
	slotExpired // replaced after LossTimeout; a reply now is late
	slotAnswered
)

type slot struct {
	sent  int64 // monotonic ns since the generator's epoch
	seq   uint32
	state uint8
}

// genCounters are updated by one socket goroutine and read by others.
type genCounters struct {
	sent, received, late, dup, stray, timedOut atomic.Uint64
	recvCalls, emptyRecvs                      atomic.Uint64
}

// genSocket is one connected UDP socket of the generator, served by one
// goroutine: every batch of replies is answered with as many new probes,
// keeping Window probes outstanding.
type genSocket struct {
	cfg      *Config
	conn     *net.UDPConn
	io       *batchIO
	ssid     uint16
	epoch    time.Time
	ring     []slot
	next     uint32 // next sequence number
	low      uint32 // oldest sequence number that may still be outstanding
	inflight int

	rm, sm  *mmsgs
	gso     bool   // UDP_SEGMENT is set on conn
	gsoBuf  []byte // Window probes back to back
	c       genCounters
	rtts    []time.Duration // sampled while measuring
	sampleN int
	err     error

	lim *rate.Limiter // the generator's, shared; nil without --rate
}

// Generator drives a reflector closed-loop over several sockets.
type Generator struct {
	cfg       Config
	socks     []*genSocket
	stopSend  atomic.Bool
	measuring atomic.Bool
	drainBy   atomic.Int64 // unix ns; sockets stop waiting for replies after it
	wg        sync.WaitGroup
}

// New opens cfg.Sockets sockets towards cfg.Target; Start begins the load.
func New(cfg Config) (*Generator, error) {
	g := &Generator{cfg: cfg}
	epoch := time.Now()
	var lim *rate.Limiter
	if cfg.Rate > 0 {
		// A burst of every probe that may be outstanding: a socket that
		// wakes up late sends what it missed rather than losing it.
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Sockets*cfg.Window)
	}
	for i := range cfg.Sockets {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.Target))
		if err != nil {
			g.Close()
			return nil, err
		}
		// Enough buffer for every outstanding reply; the cap is rmem_max.
		conn.SetReadBuffer(4 << 20)
		conn.SetWriteBuffer(4 << 20)
		bio, err := newBatchIO(conn, !cfg.Poll)
		if err != nil {
			conn.Close()
			g.Close()
			return nil, err
		}
		s := &genSocket{
			cfg: &g.cfg, conn: conn, io: bio, ssid: uint16(i + 1),
			epoch: epoch, ring: make([]slot, ringSize),
			rm: newMmsgs(max(cfg.Window, 64), 2048),
			sm: newMmsgs(cfg.Window, cfg.PacketSize), lim: lim,
		}
		if cfg.GSO {
			if err := setGSO(conn, cfg.PacketSize); err != nil {
				g.Close()
				return nil, fmt.Errorf("UDP GSO (use --no-gso): %w", err)
			}
			s.gso, s.gsoBuf = true, make([]byte, cfg.Window*cfg.PacketSize)
		}
		g.socks = append(g.socks, s)
	}
	return g, nil
}

// setGSO sets UDP_SEGMENT: writes longer than size are sent as datagrams of
// size octets.
func setGSO(conn *net.UDPConn, size int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, size)
	}); err != nil {
		return err
	}
	return serr
}

// Close closes the sockets.
func (g *Generator) Close() {
	for _, s := range g.socks {
		s.conn.Close()
	}
}

// Start fills every socket's window and starts its loop.
func (g *Generator) Start() {
	for _, s := range g.socks {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			s.err = s.run(g)
		}()
	}
}

// Stop stops sending, waits for the outstanding replies until drain has
// passed, and returns the first socket error.
func (g *Generator) Stop(drain time.Duration) error {
	g.drainBy.Store(time.Now().Add(drain).UnixNano())
	g.stopSend.Store(true)
	g.wg.Wait()
	g.Close()
	for _, s := range g.socks {
		if s.err != nil {
			return s.err
		}
	}
	return nil
}

// Totals are the sockets' counters summed: probes sent, replies received
// in time, late, duplicated and stray, probes timed out, receive calls and
// the empty ones.
type Totals struct {
	Sent, Received, Late, Dup, Stray, TimedOut uint64
	RecvCalls, EmptyRecvs                      uint64
}

// Totals sums the sockets' counters now.
func (g *Generator) Totals() Totals {
	var t Totals
	for _, s := range g.socks {
		t.Sent += s.c.sent.Load()
		t.Received += s.c.received.Load()
		t.Late += s.c.late.Load()
		t.Dup += s.c.dup.Load()
		t.Stray += s.c.stray.Load()
		t.TimedOut += s.c.timedOut.Load()
		t.RecvCalls += s.c.recvCalls.Load()
		t.EmptyRecvs += s.c.emptyRecvs.Load()
	}
	return t
}

// Measure starts (on) or ends the measured interval: RTTs are sampled
// only within it.
func (g *Generator) Measure(on bool) { g.measuring.Store(on) }

// SampledRTTs returns the RTTs sampled while measuring (call after stop).
func (g *Generator) SampledRTTs() []time.Duration {
	var out []time.Duration
	for _, s := range g.socks {
		out = append(out, s.rtts...)
	}
	return out
}

func (s *genSocket) mono(t time.Time) int64 { return int64(t.Sub(s.epoch)) }

func (s *genSocket) run(g *Generator) error {
	now := time.Now()
	if err := s.fill(now); err != nil {
		return err
	}
	var deadline time.Time
	for {
		if g.stopSend.Load() {
			if s.inflight == 0 || now.UnixNano() > g.drainBy.Load() {
				return nil
			}
		}
		if !s.cfg.Poll && now.Add(10*time.Millisecond).After(deadline) {
			// Wake up now and then even without replies, to replace
			// lost probes and to notice the end; resetting the deadline
			// on every batch would cost a timer update per batch.
			deadline = now.Add(50 * time.Millisecond)
			s.conn.SetReadDeadline(deadline)
		}
		if s.lim != nil && !s.cfg.Poll && s.inflight < s.cfg.Window && !g.stopSend.Load() {
			// Rate-limited: wake up for the next token, not only for
			// replies.
			if at := s.nextToken(now); at.Before(deadline) {
				deadline = at
				s.conn.SetReadDeadline(deadline)
			}
		}
		n, err := s.io.recv(s.rm, len(s.rm.hdrs))
		now = time.Now()
		s.c.recvCalls.Add(1)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, net.ErrClosed):
			return nil
		case errors.Is(err, syscall.ECONNREFUSED):
			// ICMP port unreachable: the reflector is not (yet, or any
			// more) there; its probes time out and count as lost.
		default:
			return fmt.Errorf("socket %d: recvmmsg: %w", s.ssid, err)
		}
		if n == 0 {
			s.c.emptyRecvs.Add(1)
		}
		s.handle(n, now, g.measuring.Load())
		s.expire(now)
		if !g.stopSend.Load() {
			if err := s.fill(now); err != nil {
				return err
			}
		}
		if n == 0 && s.cfg.Poll {
			runtime.Gosched()
		}
	}
}

func (s *genSocket) handle(n int, now time.Time, measuring bool) {
	t := s.mono(now)
	var recv, late, dup, stray uint64
	for i := range n {
		seq, ok := SenderSequence(s.cfg.Kind, s.rm.bufs[i][:s.rm.hdrs[i].Len])
		if !ok {
			stray++
			continue
		}
		sl := &s.ring[seq&ringMask]
		if sl.seq != seq || sl.state == slotEmpty {
			stray++
			continue
		}
		switch sl.state {
		case slotAnswered:
			dup++
			continue
		case slotExpired:
			late++
		case slotOutstanding:
			s.inflight--
		}
		sl.state = slotAnswered
		recv++
		if measuring {
			s.sampleN++
			if s.sampleN >= s.cfg.SampleEvery && len(s.rtts) < 1<<20 {
				s.sampleN = 0
				s.rtts = append(s.rtts, time.Duration(t-sl.sent))
			}
		}
	}
	if recv > 0 {
		s.c.received.Add(recv)
	}
	if late > 0 {
		s.c.late.Add(late)
	}
	if dup > 0 {
		s.c.dup.Add(dup)
	}
	if stray > 0 {
		s.c.stray.Add(stray)
	}
}

// expire advances low past decided probes and declares outstanding probes
// older than LossTimeout lost for the window's sake (they are replaced; a
// reply that still comes counts as late).
func (s *genSocket) expire(now time.Time) {
	t := s.mono(now)
	limit := int64(s.cfg.LossTimeout)
	var timedOut uint64
	for s.low != s.next {
		sl := &s.ring[s.low&ringMask]
		if sl.state == slotOutstanding {
			// The ring is about to wrap onto it: give up on it too.
			if t-sl.sent < limit && s.next-s.low < ringSize-uint32(s.cfg.Window) {
				break
			}
			sl.state = slotExpired
			s.inflight--
			timedOut++
		}
		s.low++
	}
	if timedOut > 0 {
		s.c.timedOut.Add(timedOut)
	}
}

// fill sends probes until Window are outstanding, once at least a quarter
// of the window is missing: sending one probe per reply would make every
// sendmmsg carry a single datagram and cost the generator as much as the
// reflector it measures.
func (s *genSocket) fill(now time.Time) error {
	k := s.cfg.Window - s.inflight
	if k <= 0 || (k < s.cfg.Window/4 && s.inflight > 0) {
		return nil
	}
	if s.lim != nil {
		k = min(k, int(s.lim.TokensAt(now)))
		if k <= 0 || !s.lim.AllowN(now, k) {
			return nil // another socket took the tokens
		}
	}
	t := s.mono(now)
	ts := stamp.NewTimestamp(now)
	size := s.cfg.PacketSize
	for i := range k {
		seq := s.next + uint32(i)
		p := stamp.SenderPacket{Sequence: seq, Timestamp: ts, SSID: s.ssid}
		b := s.sm.bufs[i]
		if s.gso {
			b = s.gsoBuf[i*size : (i+1)*size]
		}
		if _, err := p.MarshalTo(b); err != nil {
			return err
		}
		s.ring[seq&ringMask] = slot{sent: t, seq: seq, state: slotOutstanding}
	}
	if s.gso {
		return s.fillGSO(k)
	}
	sent := 0
	for sent < k {
		n, err := s.io.send(s.sm, sent, k)
		sent += n
		if err != nil {
			// Forget the probes that did not leave.
			for i := sent; i < k; i++ {
				s.ring[(s.next+uint32(i))&ringMask].state = slotEmpty
			}
			s.next += uint32(sent)
			s.inflight += sent
			s.c.sent.Add(uint64(sent))
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil // reported on the read side; try again later
			}
			return fmt.Errorf("socket %d: sendmmsg: %w", s.ssid, err)
		}
		if n == 0 {
			runtime.Gosched() // socket buffer full (poll mode)
		}
	}
	s.next += uint32(k)
	s.inflight += k
	s.c.sent.Add(uint64(k))
	return nil
}

// nextToken returns when the rate limiter will next have a token, at least
// 100 µs from now, so that fast rates send batches.
func (s *genSocket) nextToken(now time.Time) time.Time {
	need := 1 - s.lim.TokensAt(now)
	d := time.Duration(need / float64(s.lim.Limit()) * float64(time.Second))
	return now.Add(max(d, 100*time.Microsecond))
}

// fillGSO sends the k probes in gsoBuf as GSO writes of at most
// gsoMaxSegments datagrams each.
func (s *genSocket) fillGSO(k int) error {
	size := s.cfg.PacketSize
	sent := 0
	for sent < k {
		n := min(k-sent, gsoMaxSegments)
		if _, err := s.conn.Write(s.gsoBuf[sent*size : (sent+n)*size]); err != nil {
			for i := sent; i < k; i++ {
				s.ring[(s.next+uint32(i))&ringMask].state = slotEmpty
			}
			s.next += uint32(sent)
			s.inflight += sent
			s.c.sent.Add(uint64(sent))
			if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) {
				return nil
			}
			return fmt.Errorf("socket %d: GSO write: %w", s.ssid, err)
		}
		sent += n
	}
	s.next += uint32(k)
	s.inflight += k
	s.c.sent.Add(uint64(k))
	return nil
}

// mmsgs is a reusable vector of single-buffer messages for recvmmsg and
// sendmmsg on a connected socket (no addresses, no control messages).
type mmsgs struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

func newMmsgs(n, size int) *mmsgs {
	m := &mmsgs{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range n {
		m.bufs[i] = make([]byte, size)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(size)
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	return m
}

// batchIO calls recvmmsg and sendmmsg on a socket through its RawConn: in
// blocking mode the netpoller waits for readiness (and honours deadlines),
// otherwise every call returns at once. x/net's ipv4.PacketConn batch
// calls would do the same but repack every header and allocate a source
// address per datagram, which shows in a generator that must outrun the
// reflector on one core.
type batchIO struct {
	rc    syscall.RawConn
	block bool
	// The current call's arguments and results, so that the callback is
	// allocated once rather than as a closure per call.
	trap  uintptr
	hdrs  *unix.Mmsghdr
	vlen  int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func newBatchIO(conn *net.UDPConn, block bool) (*batchIO, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchIO{rc: rc, block: block}
	b.fn = b.call
	return b, nil
}

func (b *batchIO) call(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(b.trap, fd, uintptr(unsafe.Pointer(b.hdrs)), uintptr(b.vlen), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		b.n, b.errno = int(r), e
		return !(b.block && e == unix.EAGAIN)
	}
}

func (b *batchIO) result(err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if b.errno == unix.EAGAIN {
		return 0, nil
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	return b.n, nil
}

// recv receives up to n datagrams into m; hdrs[i].Len is each one's length.
func (b *batchIO) recv(m *mmsgs, n int) (int, error) {
	b.trap, b.hdrs, b.vlen = unix.SYS_RECVMMSG, &m.hdrs[0], n
	return b.result(b.rc.Read(b.fn))
}

// send sends m's messages [from, to) and returns how many left.
func (b *batchIO) send(m *mmsgs, from, to int) (int, error) {
	b.trap, b.hdrs, b.vlen = unix.SYS_SENDMMSG, &m.hdrs[from], to-from
	return b.result(b.rc.Write(b.fn))
}

// WaitReflector sends one probe every 50 ms to target until a matching reply
// comes back, the check function reports a dead process, or timeout.
func WaitReflector(ctx context.Context, target netip.AddrPort, kind ReplyKind, timeout time.Duration, dead func() error) error {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		return err
	}
	defer conn.Close()
	end := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	out := make([]byte, stamp.SenderPacketLen)
	var lastErr error
	for seq := uint32(1); time.Now().Before(end); seq++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dead != nil {
			if err := dead(); err != nil {
				return err
			}
		}
		p := stamp.SenderPacket{Sequence: seq, Timestamp: stamp.NewTimestamp(time.Now())}
		p.MarshalTo(out)
		if _, err := conn.Write(out); err != nil {
			lastErr = err
		}
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					lastErr = err
					time.Sleep(50 * time.Millisecond)
				}
				break
			}
			if got, ok := SenderSequence(kind, buf[:n]); ok && got == seq {
				return nil
			}
		}
	}
	return fmt.Errorf("no %s reply from %s within %v (last error: %v)", kind, target, timeout, lastErr)
}
