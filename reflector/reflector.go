// Package reflector implements a STAMP Session-Reflector (RFC 8762 §4.3,
// with the RFC 8972 SSID and TLVs): every valid Session-Sender packet is
// answered with a Session-Reflector packet of the same size, from the address
// the probe was sent to and with the DSCP it arrived with. It is stateful by
// default (RFC 8762 §4.3.1): each test session, a sender's 5-tuple and SSID,
// gets its own reply sequence numbers, from which senders tell forward from
// backward loss; Config.Stateless copies the sender's sequence number
// instead. It also echoes Dropbox LLAMA probes byte for byte, and can
// answer only authenticated probes (RFC 8762 §4.2.2).
package reflector

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/time/rate"

	"github.com/llama-exporter/llama_exporter/internal/clockstatus"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/legacy"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// Config is the reflector's command-line configuration.
type Config struct {
	// ListenAddresses are host:port pairs; an empty host listens on every
	// IPv4 and IPv6 address (one socket per family).
	ListenAddresses []string
	// MaxPPS is the global limit in packets per second over all sockets;
	// 0 means unlimited. Excess packets are dropped and counted.
	MaxPPS float64
	// MaxPPSPerSource is the limit in packets per second per source
	// address; 0 means unlimited.
	MaxPPSPerSource float64
	// Sockets is the number of sockets per listen address and family,
	// sharing the port with SO_REUSEPORT, each with its own goroutine;
	// 0 means 1.
	Sockets int
	// AuthKey, when set, makes the reflector answer only authenticated
	// probes (RFC 8762 §4.2.2, HMAC-SHA-256 with this shared key); a probe
	// that is too short or whose HMAC does not verify is bad data.
	AuthKey []byte
	// Stateless turns stateful mode off: the reply's Sequence Number then
	// copies the sender's instead of counting the session's packets
	// (RFC 8762 §4.3.1), and senders cannot tell the direction of loss.
	Stateless bool
	// ReceiveDelay, if set, is called after each read with the read's wall
	// time and the kernel receive timestamps of the buffers read (Unix ns;
	// 0 where there is none), for llama_exporter_receive_delay_seconds. The
	// slice is reused after the call returns; calls come from every
	// socket's goroutine at once.
	ReceiveDelay func(now int64, rxKernel []int64)
}

// maxDatagram is the largest UDP payload in octets over IPv4.
const maxDatagram = 65507

// Reflector answers STAMP probes on a set of UDP sockets.
type Reflector struct {
	logger    *slog.Logger
	conns     []*udpsock.Conn
	global    *rate.Limiter // nil when unlimited
	perSource *sourceLimiter
	m         *metrics
	stateless bool
	authKey   []byte
	rxDelay   func(now int64, rxKernel []int64) // nil: not recorded
	sessions  atomic.Int64                      // stateful sessions over all sockets (llama_reflector_sessions)
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New binds every listen address and registers the reflector's metrics
// (llama_reflector_*) with reg. It returns the bind error of the first
// address that fails, wrapping the syscall error (for example EACCES for a
// privileged port without CAP_NET_BIND_SERVICE), after closing the sockets
// already opened. Call Serve to start answering.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Reflector, error) {
	r := &Reflector{
		logger:    logger,
		stateless: cfg.Stateless,
		authKey:   cfg.AuthKey,
		rxDelay:   cfg.ReceiveDelay,
	}
	r.m = newMetrics(reg, func() float64 { return float64(r.sessions.Load()) })
	if cfg.MaxPPS > 0 {
		r.global = rate.NewLimiter(rate.Limit(cfg.MaxPPS), burst(cfg.MaxPPS))
	}
	if cfg.MaxPPSPerSource > 0 {
		r.perSource = newSourceLimiter(cfg.MaxPPSPerSource)
	}
	for _, a := range cfg.ListenAddresses {
		conns, err := listen(a, max(cfg.Sockets, 1))
		if err != nil {
			r.Close()
			return nil, err
		}
		r.conns = append(r.conns, conns...)
	}
	return r, nil
}

func burst(pps float64) int { return max(1, int(pps)) }

// listen opens the sockets of one listen address: n per family (sharing
// the port with SO_REUSEPORT when n > 1, so the kernel spreads flows over
// them, once claim has found the port free), both families for a wildcard
// host. A port in use is an error that says another process holds it.
func listen(addr string, n int) ([]*udpsock.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("reflector listen address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("reflector listen address %q: bad port", addr)
	}
	port := uint16(p)
	type family struct {
		network string
		ip      netip.Addr
	}
	var fams []family
	if host == "" {
		fams = []family{{"udp4", netip.IPv4Unspecified()}, {"udp6", netip.IPv6Unspecified()}}
	} else {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("reflector listen address %q: host must be an IP address or empty", addr)
		}
		fams = []family{{udpsock.Network(ip.Unmap()), ip.Unmap()}}
	}
	opts := udpsock.Options{RecvMeta: true, RxTimestamps: true, ReusePort: n > 1, RecvBuffer: recvBuffer, GRO: true}
	var conns []*udpsock.Conn
	fail := func(err error) ([]*udpsock.Conn, error) {
		for _, c := range conns {
			c.Close()
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("reflector listen %s: UDP port %d is held by another process: %w", addr, port, err)
		}
		return nil, fmt.Errorf("reflector listen %s: %w", addr, err)
	}
	for fi, f := range fams {
		var err error
		if n > 1 {
			var free uint16
			if free, err = claim(f.network, netip.AddrPortFrom(f.ip, port)); err == nil {
				port = free
			}
		}
		for i := 0; err == nil && i < n; i++ {
			var c *udpsock.Conn
			c, err = udpsock.Listen(f.network, netip.AddrPortFrom(f.ip, port), opts)
			if err == nil {
				port = c.LocalAddr().(*net.UDPAddr).AddrPort().Port() // port 0: the rest share the kernel's pick
				conns = append(conns, c)
			}
		}
		if err != nil {
			if fi == 1 && len(conns) == n && (errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL)) {
				break // a host without IPv6 still reflects IPv4
			}
			return fail(err)
		}
	}
	return conns, nil
}

// claim binds a to a plain socket, without SO_REUSEPORT, and closes it at
// once; it returns the port bound (the kernel's pick for port 0). A port
// that another process holds fails here with EADDRINUSE, as a plain bind
// would: the reflector's SO_REUSEPORT sockets would otherwise join that
// process's sockets (same user) and the kernel would split flows between
// the two processes.
func claim(network string, a netip.AddrPort) (uint16, error) {
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(a))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), nil
}

// recvBuffer is the receive buffer asked for each reflector socket, in
// octets: bursts are absorbed rather than dropped by the kernel before the
// rate limits can judge them.
const recvBuffer = 4 << 20

// Addrs returns the distinct local addresses of the reflector's sockets,
// useful when a listen address asked for port 0.
func (r *Reflector) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(r.conns))
	for _, c := range r.conns {
		if a := c.LocalAddr().(*net.UDPAddr).AddrPort(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Serve starts one receive loop per socket and returns at once; Close stops
// them.
func (r *Reflector) Serve() {
	r.m.up.Set(1)
	for _, c := range r.conns {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c)
		}()
	}
}

// Close closes every socket and waits for the receive loops to end.
func (r *Reflector) Close() error {
	r.closeOnce.Do(func() {
		r.m.up.Set(0)
		for _, c := range r.conns {
			c.Close()
		}
		r.wg.Wait()
	})
	return nil
}

// batchSize is how many datagrams one recvmmsg(2) / sendmmsg(2) moves.
const batchSize = 32

// serve is one socket's receive loop: it reads up to batchSize buffers per
// system call, each one datagram or, with UDP GRO, a run of datagrams of
// one flow, and answers them with one sendmmsg(2), runs of replies to one
// destination as UDP GSO buffers.
func (r *Reflector) serve(c *udpsock.Conn) {
	l := r.newReceiveLoop(c)
	if l.sessions != nil {
		defer func() { r.sessions.Add(-int64(len(l.sessions.m))) }()
	}
	for {
		n, err := l.bc.ReadBatch(l.in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.logger.Debug("reflector read", "err", err)
			continue
		}
		l.reflectBatch(l.in[:n])
	}
}

// receiveLoop is the state of one socket's receive loop. Its buffers are
// allocated once, so the reflection path does not allocate
// (golang.org/x/net's ReadBatch allocates the sender's net.UDPAddr, once
// per buffer).
type receiveLoop struct {
	r        *Reflector
	bc       udpsock.BatchConn
	in       []ipv4.Message // the read batch
	replyBuf []byte         // where reflect builds each reply
	out      *replyBatch
	sessions *sessionTable        // nil in stateless mode
	auth     *stamp.Authenticator // nil unless authenticated; this loop's own: HMAC state is not shareable
	t3At     int                  // where T3 goes in a Session-Reflector packet
	// wildcard is true when the socket is bound to a wildcard address, so
	// that each reply names its source. Bound to one address, the kernel
	// picks it as the source: no IP_PKTINFO needed per reply.
	wildcard bool
	rx       []int64 // the read's kernel receive timestamps, for r.rxDelay
}

// newReceiveLoop allocates the buffers of c's receive loop, and its own
// session table (stateful mode) and HMAC state (authenticated mode).
func (r *Reflector) newReceiveLoop(c *udpsock.Conn) *receiveLoop {
	l := &receiveLoop{
		r:        r,
		bc:       c.Batch(),
		in:       udpsock.NewReadBatch(batchSize, maxDatagram),
		replyBuf: make([]byte, maxDatagram),
		out:      newReplyBatch(c, r.logger),
		t3At:     stamp.OffsetTimestamp,
		wildcard: c.LocalAddr().(*net.UDPAddr).IP.IsUnspecified(),
		rx:       make([]int64, 0, batchSize),
	}
	if !r.stateless {
		l.sessions = newSessionTable(&r.sessions)
	}
	if r.authKey != nil {
		l.auth, l.t3At = stamp.NewAuthenticator(r.authKey), stamp.AuthOffsetTimestamp
	}
	return l
}

// reflectBatch answers the datagrams of the buffers in, just read, and
// sends the replies: with one sendmmsg(2), or, when GRO buffers bring more
// replies than one holds, as many as needed.
func (l *receiveLoop) reflectBatch(in []ipv4.Message) {
	// Locals, so that the per-datagram loop does not reload them through
	// l after every call.
	r, replyBuf, out, sessions, auth, wildcard := l.r, l.replyBuf, l.out, l.sessions, l.auth, l.wildcard
	received := 0 // datagrams read and not yet counted
	now := time.Now()
	rx := l.rx[:0]
	for i := range in {
		m := &in[i]
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		from := unmap(ua.AddrPort())
		meta := udpsock.ParseMeta(m.OOB[:m.NN])
		rx = append(rx, meta.KernelRX)
		t2, src := receiveTime(meta.KernelRX, now), replySource(meta.Dst, wildcard)
		data := m.Buffers[0][:m.N]
		seg, segments := groSegments(len(data), meta.GROSize)
		received += segments
		for j := range segments {
			req := data[j*seg : min((j+1)*seg, len(data))]
			reply, tos, isSTAMP, ok := r.reflect(req, replyBuf, from, meta, t2, sessions, auth)
			if !ok {
				continue
			}
			if tos == 0 {
				tos = -1 // the socket's default: no control message needed
			}
			if !out.add(reply, from, src, meta.IfIndex, tos, isSTAMP) {
				l.send(received)
				received = 0
				out.add(reply, from, src, meta.IfIndex, tos, isSTAMP)
			}
		}
	}
	l.send(received)
	if r.rxDelay != nil {
		r.rxDelay(now.UnixNano(), rx)
	}
}

// unmap is a with an IPv4-mapped IPv6 address turned into the IPv4
// address: a sender is known by one address, whichever the socket's family.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// receiveTime is T2: the kernel's receive time kernelRX when it has one
// (not 0), else now, when the batch was read.
func receiveTime(kernelRX int64, now time.Time) time.Time {
	if kernelRX != 0 {
		return time.Unix(0, kernelRX)
	}
	return now
}

// replySource is the address a reply must leave from: on a wildcard
// socket the one its probe was sent to, dst; else invalid, for the kernel
// to pick the socket's.
func replySource(dst netip.Addr, wildcard bool) netip.Addr {
	if !wildcard {
		return netip.Addr{}
	}
	return dst
}

// groSegments splits a buffer of n octets, read with GRO segment size
// groSize (0 for a single datagram), into segments datagrams of seg
// octets, the last possibly shorter.
func groSegments(n, groSize int) (seg, segments int) {
	seg = n
	if groSize > 0 && groSize < seg {
		seg = groSize // a run of datagrams of one flow (UDP GRO)
	}
	if seg == 0 {
		return 0, 1 // an empty datagram, which is bad data
	}
	return seg, (n + seg - 1) / seg
}

// send counts the received datagrams not counted yet, then stamps T3 into
// the replies collected and sends them.
func (l *receiveLoop) send(received int) {
	// Counted before their replies, so that received >= reflected
	// whenever the counters are read.
	l.r.m.received.Add(float64(received))
	// T3 as late as possible, and one clock read for the batch: the
	// replies are complete but for it (and, authenticated, the HMAC that
	// covers it).
	l.out.stampT3(stamp.NewTimestamp(time.Now()), l.t3At, l.auth)
	sent, failed := l.out.flush(l.bc)
	l.r.m.reflected.Add(float64(sent))
	if failed > 0 {
		l.r.m.sendErrs.Add(float64(failed))
	}
}

// reflect checks limits, decodes the Session-Sender packet in req and
// builds the Session-Reflector packet in out[:len(req)], all but T3, which
// the caller writes (and, in authenticated mode, then seals) just before
// sending. It reports false when the packet is dropped (and counted).
func (r *Reflector) reflect(req, out []byte, from netip.AddrPort, meta udpsock.Meta, t2 time.Time, sessions *sessionTable, auth *stamp.Authenticator) (reply []byte, tos int, isSTAMP, ok bool) {
	if !r.allow(from, t2) {
		return nil, 0, false, false
	}
	if auth == nil && legacy.IsProbe(req) {
		reply, tos = echoLegacy(req, out)
		return reply, tos, false, true
	}
	var p stamp.SenderPacket
	reqBase, replyBase, err := decodeSender(&p, req, auth)
	if err != nil {
		r.m.badData.Inc()
		return nil, 0, false, false
	}
	rp := stamp.ReflectorPacket{
		Sequence:            replySequence(sessions, sessionKey{from, meta.Dst, p.SSID}, &p, t2.Unix()),
		ErrorEstimate:       clockstatus.ErrorEstimate(),
		SSID:                p.SSID,
		ReceiveTimestamp:    stamp.NewTimestamp(t2),
		SenderSequence:      p.Sequence,
		SenderTimestamp:     p.Timestamp,
		SenderErrorEstimate: p.ErrorEstimate,
		SenderTTL:           senderTTL(meta.TTL),
	}
	// Never more octets than received: the reply is exactly the request's
	// size, and whatever followed the base packet (padding, TLVs) is echoed.
	reply = out[:len(req)]
	copy(reply[replyBase:], req[reqBase:])
	tos = answerTLVs(reply[replyBase:], meta.TOS)
	// T3 is filled in by the caller just before the send.
	if err := encodeReflector(&rp, reply, auth); err != nil {
		r.m.badData.Inc()
		return nil, 0, false, false
	}
	return reply, tos, true, true
}

// allow applies the global and the per-source rate limits to a packet
// from from received at t2. One that either limit refuses is dropped, and
// counted as throttled. Small enough to be inlined: without limits, the
// reflection path makes no call for them.
func (r *Reflector) allow(from netip.AddrPort, t2 time.Time) bool {
	return r.global == nil && r.perSource == nil || r.allowLimited(from, t2)
}

// allowLimited is allow when at least one limit is set.
func (r *Reflector) allowLimited(from netip.AddrPort, t2 time.Time) bool {
	if r.global != nil && !r.global.AllowN(t2, 1) {
		r.m.throttled.Inc()
		return false
	}
	if r.perSource != nil && !r.perSource.allow(from.Addr(), t2) {
		r.m.throttled.Inc()
		return false
	}
	return true
}

// echoLegacy answers a Dropbox LLAMA collector's probe as Dropbox's
// reflector does: req returned byte for byte in out, with the TOS it asks
// for.
func echoLegacy(req, out []byte) (reply []byte, tos int) {
	var lp legacy.Probe
	lp.UnmarshalBinary(req)
	return out[:copy(out, req)], int(lp.TOS)
}

// decodeSender decodes the Session-Sender packet in req into p, checking
// its HMAC with auth in authenticated mode. reqBase and replyBase are the
// sizes of the base Session-Sender and Session-Reflector packets of the
// mode, after which the TLVs start.
func decodeSender(p *stamp.SenderPacket, req []byte, auth *stamp.Authenticator) (reqBase, replyBase int, err error) {
	if auth != nil {
		return stamp.AuthSenderPacketLen, stamp.AuthReflectorPacketLen, p.UnmarshalAuthWith(req, auth)
	}
	return stamp.SenderPacketLen, stamp.ReflectorPacketLen, p.UnmarshalBinary(req)
}

// replySequence is the reply's Sequence Number (RFC 8762 §4.3.1): in
// stateful mode (sessions not nil) the count of session k's packets, one
// more of which, p, came at Unix second now; else, or when the table has no
// room for k, the sender's sequence number.
func replySequence(sessions *sessionTable, k sessionKey, p *stamp.SenderPacket, now int64) uint32 {
	if sessions != nil {
		if n, ok := sessions.next(k, p.Sequence, p.Timestamp, now); ok {
			return n
		}
	}
	return p.Sequence
}

// senderTTL is the Sender TTL of a reply to a packet received with ttl:
// 255 when that is unknown.
func senderTTL(ttl int) uint8 {
	if ttl >= 0 && ttl <= 255 {
		return uint8(ttl)
	}
	return 255
}

// encodeReflector writes rp into the base packet at the start of reply;
// in authenticated mode without its HMAC, which is sealed once T3 is in.
func encodeReflector(rp *stamp.ReflectorPacket, reply []byte, auth *stamp.Authenticator) error {
	if auth != nil {
		_, err := rp.MarshalAuthUnsealed(reply)
		return err
	}
	_, err := rp.MarshalTo(reply)
	return err
}

// answerTLVs processes the TLVs copied from a request (RFC 8972 §4): it
// clears the U flag of those this reflector understands, fills the Class of
// Service TLV with the DSCP and ECN received (§4.4), and returns the TOS
// octet the reply must carry: DSCP1 when asked for, else the received one.
// Unknown TLVs keep the U flag; a malformed one ends the walk. So does the
// Class of Service TLV when the received TOS is unknown (receivedTOS < 0,
// the portable socket layer, which can send no per-reply DSCP either): a
// DSCP2 we did not see would read as remarking.
func answerTLVs(tlvs []byte, receivedTOS int) int {
	tos := receivedTOS
	for len(tlvs) >= stamp.TLVHeaderLen {
		t, rest, err := stamp.NextTLV(tlvs)
		if err != nil {
			break
		}
		switch t.Type {
		case stamp.TLVExtraPadding:
			tlvs[0] &^= stamp.TLVFlagU
		case stamp.TLVClassOfService:
			var cos stamp.ClassOfService
			if cos.UnmarshalBinary(t.Value) != nil {
				tlvs[0] |= stamp.TLVFlagM
				break
			}
			if receivedTOS < 0 {
				break
			}
			tlvs[0] &^= stamp.TLVFlagU
			cos.DSCP2, cos.ECN = uint8(receivedTOS>>2), uint8(receivedTOS&3)
			cos.RP = stamp.CoSRPDefault
			cos.MarshalTo(t.Value)
			tos = int(cos.DSCP1) << 2
		}
		tlvs = rest
	}
	return tos
}
