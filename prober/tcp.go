package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/config"
)

// tcpProber probes with TCP handshakes, for targets without a reflector:
// each probe is one connect(2) to the target's port from its flow's fixed
// source port, aborted with a RST as soon as it completes, so that nothing
// is left in TIME_WAIT and the application sees no data. A RST from the
// target (connection refused) answers the probe too. There is no reflector,
// hence no dwell, direction, hop count or DSCP remarking.
var tcpProber = Prober{
	// No payload (packet_size refused) and no default port: targets name
	// theirs unless the module sets one.
	Spec:  config.ProberSpec{UsesPort: true},
	New:   func(*config.Module) Protocol { return tcpProtocol{} },
	Open:  openTCPFlows,
	Start: startTCP,
}

// errNoDatagrams is what tcpProtocol answers: tcp probes are handshakes.
var errNoDatagrams = errors.New("the tcp prober sends no datagrams")

// tcpProtocol is the Protocol of the registry entry; the scheduler calls
// Start instead of it.
type tcpProtocol struct{}

// Encode refuses: probes are handshakes, started by startTCP.
func (tcpProtocol) Encode([]byte, *Probe) ([]byte, error) { return nil, errNoDatagrams }

// Decode refuses: there are no reply datagrams.
func (tcpProtocol) Decode([]byte, *DecodedReply) error { return errNoDatagrams }

// initialRTO is TCP's initial retransmission timeout (RFC 6298 §2.1, and
// Linux's TCP_TIMEOUT_INIT): a handshake that took longer had its SYN
// retransmitted, and a lost SYN must not read as a long RTT.
const initialRTO = int64(time.Second)

// tcpFlows are the flows of one address family of a tcp module: per flow a
// bound, unconnected socket that keeps the flow's source port reserved, and
// the handshakes in flight. Every socket on the port sets SO_REUSEADDR, so
// handshakes of one flow to different targets share it (their 4-tuples
// differ); handshakes of one flow to one target take turns (see start).
type tcpFlows struct {
	network   string // "tcp4" or "tcp6"
	src       netip.Addr
	ports     []uint16
	fds       []int // the reserving sockets
	dialer    net.Dialer
	timeout   time.Duration
	kernelRTT bool // time handshakes by TCP_INFO where the kernel has it
	logger    loggerFunc
	failed    func() // counts a send error

	ctx    context.Context // ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight map[tupleKey]*handshake
}

// loggerFunc logs at debug level.
type loggerFunc func(msg string, args ...any)

// tupleKey is a handshake's 4-tuple: its flow's source port and its
// destination.
type tupleKey struct {
	dst  netip.AddrPort
	flow int
}

// handshake is one probe's connect in flight.
type handshake struct {
	s      *Session // whose probe it is
	cancel context.CancelFunc
	done   chan struct{} // closed once its socket is closed
}

// openTCPFlows reserves the module's flow ports for family fam: first+i
// with source_port_range, ephemeral ports otherwise.
func openTCPFlows(p *pool, fam int, src netip.Addr) (flowSet, error) {
	f := &tcpFlows{network: "tcp4", src: src, timeout: p.cfg.Timeout,
		kernelRTT: !p.userTimestamps, logger: p.logger.Debug, failed: p.stats.sendFailed,
		inflight: make(map[tupleKey]*handshake)}
	if fam == 1 {
		f.network = "tcp6"
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	dscp := p.cfg.DSCP
	f.dialer = net.Dialer{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		return control(c, fam, dscp)
	}}
	if err := f.reserve(p.cfg); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// reserve reserves the source port of every flow.
func (f *tcpFlows) reserve(cfg *config.Module) error {
	for i := range cfg.Flows {
		port := uint16(0)
		if cfg.SourcePorts[0] != 0 {
			port = cfg.SourcePorts[0] + uint16(i)
		}
		fd, bound, err := reservePort(netip.AddrPortFrom(f.src, port))
		if err != nil {
			return fmt.Errorf("flow %d: reserving TCP port %d: %w", i, port, err)
		}
		f.fds, f.ports = append(f.fds, fd), append(f.ports, bound)
	}
	return nil
}

// port returns flow i's source port.
func (f *tcpFlows) port(i int) uint16 {
	if i < len(f.ports) {
		return f.ports[i]
	}
	return 0
}

// close ends the handshakes in flight, waits for them, and releases the
// ports.
func (f *tcpFlows) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	for _, fd := range f.fds {
		unix.Close(fd)
	}
}

// startTCP is the tcp prober's Start: it starts probe seq of s as a
// handshake from flow's port to dst. A probe that cannot start (no flow
// ports, too many handshakes in flight) counts as a send error and is
// left to time out.
func startTCP(p *pool, s *Session, seq uint32, flow int, dst netip.AddrPort) {
	f, _ := p.flowSet(family(dst.Addr())).(*tcpFlows)
	if f == nil || !f.start(s, seq, flow, dst) {
		p.stats.sendFailed()
		p.logger.Debug("tcp probe not started", "module", s.Module, "target", s.Target,
			"in_flight", handshakeSlots.inUse(), "limit", handshakeSlots.limit())
	}
}

// start runs the handshake of probe seq of s in its own goroutine once the
// previous handshake of the same 4-tuple, if still in flight, is over: a
// handshake of s itself is cancelled (it has waited flows × interval, and
// counts as lost), one of another session probing the same address (two
// names of one host) is waited for. It returns false when it cannot start.
func (f *tcpFlows) start(s *Session, seq uint32, flow int, dst netip.AddrPort) bool {
	if flow >= len(f.ports) || !handshakeSlots.acquire() {
		return false
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	h := &handshake{s: s, cancel: cancel, done: make(chan struct{})}
	k := tupleKey{dst, flow}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		cancel()
		handshakeSlots.release()
		return false
	}
	prev := f.inflight[k]
	f.inflight[k] = h
	f.wg.Add(1)
	f.mu.Unlock()
	go f.run(ctx, h, prev, k, s, seq)
	return true
}

// run makes one handshake and hands an answer to the session.
func (f *tcpFlows) run(ctx context.Context, h, prev *handshake, k tupleKey, s *Session, seq uint32) {
	defer f.wg.Done()
	defer handshakeSlots.release()
	if prev != nil {
		if prev.s == s {
			prev.cancel()
		}
		<-prev.done // the 4-tuple is free again
	}
	r, answered := f.handshake(ctx, k)
	h.cancel()
	close(h.done)
	f.mu.Lock()
	if f.inflight[k] == h {
		delete(f.inflight, k)
	}
	f.mu.Unlock()
	if answered {
		r.seq, r.reflSeq = seq, seq
		s.onReply(&r)
	}
}

// handshake connects from k's flow port to k's destination and closes the
// connection at once with a RST (SO_LINGER 0). The target answered if the
// handshake completed, or if it refused it with a RST, within the initial
// RTO and without a SYN retransmission. The RTT is the kernel's SYN to
// SYN-ACK sample where there is one, else the connect time.
func (f *tcpFlows) handshake(ctx context.Context, k tupleKey) (r timedReply, answered bool) {
	start := mono()
	c, err := f.dialer.DialTCP(ctx, f.network, netip.AddrPortFrom(f.src, f.ports[k.flow]), k.dst)
	t4 := mono()
	r = timedReply{t4: t4, read: t4, senderTTL: -1, dscp: -1, dscp2: -1}
	if err != nil {
		return r, f.refused(ctx, k, err) && t4-start < initialRTO
	}
	defer c.Close()
	if t4-start >= initialRTO {
		return r, false
	}
	if f.kernelRTT {
		rtt, retransmitted, ok := kernelRTT(c)
		if retransmitted {
			return r, false
		}
		if ok {
			r.rtt = int64(rtt)
		}
	}
	return r, true
}

// refused reports whether a failed handshake was refused by the target (a
// RST), which answers the probe. Any other failure but a timeout is a send
// error: the kernel did not start it (no route, a local firewall) or the
// network reported the target unreachable, as for a datagram whose send
// fails.
func (f *tcpFlows) refused(ctx context.Context, k tupleKey, err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if ctx.Err() == nil && !errors.Is(err, syscall.ETIMEDOUT) {
		f.failed()
		f.logger("tcp handshake failed", "dst", k.dst, "port", f.ports[k.flow], "err", err)
	}
	return false
}

// control sets the options of a handshake's socket before it is bound:
// SO_REUSEADDR to share the flow's port, SO_LINGER 0 to abort with a RST,
// the module's DSCP, and the platform's own (see setOSOptions).
func control(c syscall.RawConn, fam, dscp int) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		s := int(fd)
		err = errors.Join(
			unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
			unix.SetsockoptLinger(s, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}),
			setTOS(s, fam, dscp),
			setOSOptions(s))
	})
	return errors.Join(cerr, err)
}

// setTOS sets the DSCP of a socket's packets; nothing for DSCP 0.
func setTOS(fd, fam, dscp int) error {
	switch {
	case dscp == 0:
		return nil
	case fam == 1:
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, dscp<<2)
	default:
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, dscp<<2)
	}
}

// reservePort binds a TCP socket to addr (port 0: an ephemeral port) with
// SO_REUSEADDR and keeps it unconnected, which reserves the port: the
// kernel gives it to no other connect, and the flow's handshakes, which
// set SO_REUSEADDR too, can bind it. It returns the socket and its port.
func reservePort(addr netip.AddrPort) (fd int, port uint16, err error) {
	domain, sa := sockaddr(addr)
	syscall.ForkLock.RLock()
	fd, err = unix.Socket(domain, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, 0, err
	}
	if err = bindReserved(fd, domain, sa); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	if port, err = boundPort(fd); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	return fd, port, nil
}

// sockaddr returns the address family and socket address of addr.
func sockaddr(addr netip.AddrPort) (domain int, sa unix.Sockaddr) {
	if a := addr.Addr(); a.Is6() {
		return unix.AF_INET6, &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
	}
	return unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
}

// boundPort returns the local port a socket is bound to.
func boundPort(fd int) (uint16, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port), nil
	case *unix.SockaddrInet6:
		return uint16(a.Port), nil
	}
	return 0, errors.New("no port bound")
}

// bindReserved sets a reserving socket's options and binds it to sa. An
// IPv6 socket is IPv6 only, as the dialer's are.
func bindReserved(fd, domain int, sa unix.Sockaddr) error {
	if domain == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return err
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	return unix.Bind(fd, sa)
}
