package prober

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"golang.org/x/net/ipv4"
)

// maxDatagram is the largest UDP payload in octets.
const maxDatagram = 65507

// demuxKey identifies the session a reply belongs to: the reflector's
// address and the SSID (RFC 8972 §3) the session put in its probes.
type demuxKey struct {
	from netip.AddrPort
	ssid uint16
}

// pool holds one module's sockets: flows sockets per address family, shared
// by every session of the module, so a thousand targets do not mean a
// thousand sockets. Each socket has one receive loop that demultiplexes
// replies to sessions in O(1).
type pool struct {
	module string
	cfg    *config.Module
	logger *slog.Logger
	stats  *poolStats

	userTimestamps bool // do not ask for kernel timestamps
	// rounds paces the receive loops when replies carry kernel receive
	// timestamps; nil: every reply is read as soon as it arrives.
	rounds *roundSignal
	done   chan struct{} // closed by close
	proto  *Prober       // the module's protocol, from the registry
	// enc builds the probes; used by the scheduler goroutine only.
	enc   Protocol
	trace *poolTrace // path tracing; nil without path_trace

	ports   PortWatcher   // nil: none
	watched []watchedPort // what ports was told, to undo at close
	rxDelay *ReceiveDelay // nil: not recorded

	mu       sync.RWMutex
	conns    [2][]*flowConn // [0] IPv4, [1] IPv6; opened on first use
	flowSets [2]flowSet     // instead of conns, with Prober.Open
	ttl      [2]int         // initial TTL / Hop Limit of probes, per family
	sessions map[demuxKey]*Session
	byAddr   map[netip.AddrPort][]*Session // for reflectors that zero the SSID
	nextSSID uint16
	closed   bool
	wg       sync.WaitGroup
}

// poolStats are counters the manager exports.
type poolStats struct {
	badReply  func() // a datagram that is not a STAMP reply
	unmatched func() // a reply no session claims
	sendError func() // a probe that could not be sent
}

// newPool returns the pool of a module whose validated config names a
// registered protocol.
func newPool(module string, cfg *config.Module, logger *slog.Logger, stats *poolStats) *pool {
	proto := Probers[cfg.Prober]
	return &pool{
		module: module, cfg: cfg, logger: logger, stats: stats, proto: proto, enc: proto.New(cfg),
		sessions: make(map[demuxKey]*Session),
		byAddr:   make(map[netip.AddrPort][]*Session),
		nextSSID: uint16(mono()),
		done:     make(chan struct{}),
	}
}

func family(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return 0
	}
	return 1
}

// initialTTL returns the TTL / Hop Limit probes to a are sent with.
func (p *pool) initialTTL(a netip.Addr) int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ttl[family(a)]
}

// flowPort returns the local port of flow i for addresses like a, or 0.
func (p *pool) flowPort(a netip.Addr, i int) uint16 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if cs := p.conns[family(a)]; i < len(cs) {
		return cs[i].port
	}
	if fs := p.flowSets[family(a)]; fs != nil {
		return fs.port(i)
	}
	return 0
}

// sockets returns the flow sockets of dst's family, opening them on first
// use. Protocols with their own Open get a flow set instead, and no sockets.
// The sockets of a family are opened under the write lock, once: a scrape
// that finds them missing checks again after taking it.
func (p *pool) sockets(fam int) ([]*flowConn, error) {
	p.mu.RLock()
	cs := p.conns[fam]
	p.mu.RUnlock()
	if cs != nil {
		return cs, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if p.conns[fam] != nil {
		return p.conns[fam], nil
	}
	network, src, err := p.localAddr(fam)
	if err != nil {
		return nil, err
	}
	if p.proto.Open != nil {
		return nil, p.openFlowSetLocked(fam, src.Unmap())
	}
	cs, err = p.listenFlows(network, src)
	if err != nil {
		return nil, err
	}
	if p.trace != nil {
		if err := p.trace.enable(cs); err != nil {
			closeFlows(cs)
			return nil, err
		}
	}
	p.receiveLocked(fam, cs)
	return cs, nil
}

// localAddr returns the network ("udp4" or "udp6") and the local address of
// family fam's flow sockets: source_ip_address, or the family's unspecified
// address without one. A source_ip_address of the other family is an error,
// as it cannot send to the target.
func (p *pool) localAddr(fam int) (network string, src netip.Addr, err error) {
	src = p.cfg.SourceIP
	network = "udp4"
	if fam == 1 {
		network = "udp6"
		if !src.IsValid() {
			src = netip.IPv6Unspecified()
		}
	} else if !src.IsValid() {
		src = netip.IPv4Unspecified()
	}
	if src.IsValid() && family(src) != fam {
		return "", netip.Addr{}, fmt.Errorf("source_ip_address %s is not of the target's address family", src)
	}
	return network, src, nil
}

// listenFlows opens one socket per flow on src, with the flow's fixed
// source port from source_port_range or an ephemeral one, and the protocol's
// Listen (udpsock's by default). If one cannot be opened, those already open
// are closed, so that a failed scrape leaves no socket behind.
func (p *pool) listenFlows(network string, src netip.Addr) ([]*flowConn, error) {
	// A large receive buffer (a limit, not an allocation) absorbs bursts of
	// replies, such as the first probes of many sessions started at once.
	// Of the reply's control messages only the DSCP is used.
	opts := udpsock.Options{RecvTOS: true, TOS: p.cfg.DSCP << 2, RecvBuffer: 4 << 20,
		RxTimestamps: !p.userTimestamps, TxTimestamps: !p.userTimestamps}
	listen := p.proto.Listen
	if listen == nil {
		listen = listenUDP
	}
	cs := make([]*flowConn, 0, p.cfg.Flows)
	for i := range p.cfg.Flows {
		port := uint16(0)
		if p.cfg.SourcePorts[0] != 0 {
			port = p.cfg.SourcePorts[0] + uint16(i)
		}
		c, err := listen(network, netip.AddrPortFrom(src.Unmap(), port), opts)
		if err != nil {
			closeFlows(cs)
			return nil, fmt.Errorf("module %s: flow socket %d: %w", p.module, i, err)
		}
		fc := &flowConn{FlowSocket: c, flow: i, port: c.LocalAddr().(*net.UDPAddr).AddrPort().Port()}
		fc.onTx = fc.txTimestamp
		fc.out = newOutBatch(fc, p.cfg.PacketSize+p.proto.HeaderLen)
		cs = append(cs, fc)
	}
	return cs, nil
}

// closeFlows closes the sockets of flows that were never put to use.
func closeFlows(cs []*flowConn) {
	for _, c := range cs {
		c.Close()
	}
}

// receiveLocked puts family fam's new sockets cs to use: it records the
// family's initial TTL (probes and hop counts start from it), starts one
// receive loop per socket and publishes cs for later calls of sockets. p.mu
// is held.
func (p *pool) receiveLocked(fam int, cs []*flowConn) {
	p.ttl[fam] = cs[0].InitialTTL()
	for _, c := range cs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.receive(c)
		}()
	}
	p.conns[fam] = cs
	p.watchLocked(fam)
}

// listenUDP is udpsock.Listen as a Prober's Listen.
func listenUDP(network string, laddr netip.AddrPort, o udpsock.Options) (FlowSocket, error) {
	c, err := udpsock.Listen(network, laddr, o)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// register makes s reachable for replies from dst. A session keeps its
// SSID for life unless another session of the pool already uses it with
// dst (after an address change); SSIDs are never 0, which TWAMP-Light
// reflectors send back when they ignore the field.
func (p *pool) register(s *Session, dst netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ssid := uint16(s.ssid.Load())
	if _, taken := p.sessions[demuxKey{dst, ssid}]; ssid == 0 || taken {
		for {
			p.nextSSID++
			if p.nextSSID == 0 {
				continue
			}
			if _, taken := p.sessions[demuxKey{dst, p.nextSSID}]; !taken {
				break
			}
		}
		ssid = p.nextSSID
		s.ssid.Store(uint32(ssid))
	}
	p.sessions[demuxKey{dst, ssid}] = s
	p.byAddr[dst] = append(p.byAddr[dst], s)
	if s.paths != nil {
		p.registerTraceLocked(s, dst)
	}
}

// unregister removes s as reachable from dst.
func (p *pool) unregister(s *Session, dst netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := (demuxKey{dst, uint16(s.ssid.Load())}); p.sessions[k] == s {
		delete(p.sessions, k)
	}
	if s.paths != nil {
		p.unregisterTraceLocked(s, dst)
	}
	// A new list, not the old one shifted: lookup reads lists after
	// releasing the lock.
	list := slices.DeleteFunc(slices.Clone(p.byAddr[dst]), func(o *Session) bool { return o == s })
	if len(list) == 0 {
		delete(p.byAddr, dst)
	} else {
		p.byAddr[dst] = list
	}
}

// lookup finds the session that reply d from from belongs to: by its
// SSID, or, when the reflector did not return that (TWAMP-Light ones send
// 0), by address, and among the sessions that probe the address by the T1
// that the reply echoes. Two spellings of one target are two sessions of
// one pool with one address, and their sequence numbers overlap.
func (p *pool) lookup(from netip.AddrPort, d *DecodedReply) *Session {
	p.mu.RLock()
	s := p.sessions[demuxKey{from, d.SSID}]
	list := p.byAddr[from] // never changed in place: read after the unlock
	p.mu.RUnlock()
	if s != nil {
		return s
	}
	if d.SSID == 0 && len(list) == 1 {
		return list[0]
	}
	// A session's lock is not taken under the pool's: onReply takes them
	// the other way round.
	var decided *Session
	for _, c := range list {
		ours, pending := c.sent(d.Seq, d.T1)
		if pending {
			return c
		}
		if ours && decided == nil {
			decided = c // a late or duplicate reply, unless a session awaits it
		}
	}
	return decided
}

// recvBatch is how many replies one recvmmsg(2) reads per flow socket.
const recvBatch = 32

// receive is one socket's reply loop, reading up to recvBatch replies per
// system call; its buffers are allocated once (golang.org/x/net's ReadBatch
// allocates the sender's net.UDPAddr).
func (p *pool) receive(c *flowConn) {
	bc := c.Batch()
	msgs := udpsock.NewReadBatch(recvBatch, maxDatagram)
	dec := p.proto.New(p.cfg) // this loop's own: it may hold HMAC state
	d := new(DecodedReply)    // reused: through the interface it escapes
	rx := make([]int64, 0, recvBatch)
	if fb, ok := dec.(flowBound); ok {
		fb.bindFlow(c.flow, c.port)
	}
	for {
		n, err := bc.ReadBatch(msgs, 0)
		now := time.Now() // one clock read for the batch: monotonic and wall
		t4, wall := int64(now.Sub(epoch)), now.UnixNano()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if p.trace != nil {
				c.drainTxAll() // an ICMP error the tracer reads from the error queue
			}
			continue // ICMP errors surface here on Linux; the probe is lost
		}
		for i := range msgs[:n] {
			p.handle(dec, d, &msgs[i], t4, wall)
		}
		p.recordDelays(msgs[:n], wall, rx)
		if p.rounds != nil && n < len(msgs) {
			// Drained: the next replies are read after the next round.
			select {
			case <-p.rounds.next():
			case <-p.done:
				return
			}
		}
	}
}

// handle decodes one received datagram with dec, into d, and hands it to
// its session. t4 and wall are the batch's read time, monotonic and Unix ns.
// A datagram that does not decode is bad data; one that decodes but
// answers no probe of ours is unmatched.
func (p *pool) handle(dec Protocol, d *DecodedReply, m *ipv4.Message, t4, wall int64) {
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return
	}
	from := ua.AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if err := dec.Decode(m.Buffers[0][:m.N], d); err != nil {
		if errors.Is(err, ErrNotOurs) {
			p.stats.unmatched()
		} else {
			p.stats.badReply()
		}
		return
	}
	if p.trace != nil && d.Seq&traceSeqFlag != 0 && p.trace.reply(from, d, m.OOB[:m.NN]) {
		return
	}
	s := p.lookup(from, d)
	if s == nil {
		p.stats.unmatched()
		return
	}
	meta := udpsock.ParseMeta(m.OOB[:m.NN])
	p.collectTx(s, d.Seq, meta.KernelRX)
	r := timedReply{seq: d.Seq, reflSeq: d.ReflectorSeq, t4: arrival(t4, wall, meta.KernelRX), read: t4,
		rxKernel: meta.KernelRX, stamps: d.Stamps, dwell: int64(d.Dwell), senderTTL: d.SenderTTL, dscp: -1, dscp2: d.DSCP2}
	if meta.TOS >= 0 {
		r.dscp = meta.TOS >> 2
	}
	if !s.onReply(&r) {
		p.stats.unmatched()
	}
}

// maxReadDelay bounds how long a reply may have waited in the socket by its
// kernel receive timestamp; a longer wait means the wall clock stepped, and
// the read time is used instead.
const maxReadDelay = time.Second

// arrival returns a reply's arrival in monotonic ns: the read time t4 moved
// back by how long the kernel's receive timestamp rxKernel (Unix ns, 0 if
// none) says the reply waited, judged against the wall time of the read.
// So a reply read a round after it came is still timed, and judged against
// the timeout, by when it came.
func arrival(t4, wall, rxKernel int64) int64 {
	if rxKernel == 0 {
		return t4
	}
	if d := wall - rxKernel; d >= 0 && d < int64(maxReadDelay) {
		return t4 - d
	}
	return t4
}

// close closes every socket and waits for the receive loops.
func (p *pool) close() {
	p.mu.Lock()
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	for _, cs := range p.conns {
		for _, c := range cs {
			c.Close()
		}
	}
	p.unwatchLocked()
	p.mu.Unlock()
	p.closeFlowSets()
	p.wg.Wait()
}

// collectTx reads the transmit timestamps of the flow socket probe seq of s
// left from, when its reply overtook the scheduler's own read: on loopback
// or a short path the reply can be back within microseconds.
func (p *pool) collectTx(s *Session, seq uint32, rxKernel int64) {
	if rxKernel == 0 || p.userTimestamps || !s.awaitsTxTimestamp(seq) {
		return
	}
	p.mu.RLock()
	cs := p.conns[family(s.Dst().Addr())]
	p.mu.RUnlock()
	if f := int(seq % uint32(p.cfg.Flows)); f < len(cs) {
		cs[f].drainTxAll()
	}
}
