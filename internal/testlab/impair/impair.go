//go:build linux

package impair

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Impairment describes what the relay does to the datagrams of one direction.
// The zero value passes datagrams through unchanged except that it sends
// them with DSCP 0; use DSCP -1 to leave the TOS alone.
type Impairment struct {
	// Loss is the probability, 0..1, that a datagram is dropped. The
	// decision is drawn independently for every datagram.
	Loss float64
	// Delay is the fixed one-way delay added to every datagram. Datagrams
	// leave in arrival order (the delay line is a FIFO), so lowering Delay
	// at run time does not let later datagrams overtake earlier ones.
	Delay time.Duration
	// Duplicate is the probability, 0..1, that a datagram that was not
	// dropped is sent twice (the two copies back to back).
	Duplicate float64
	// Reorder is the probability, 0..1, that a datagram is held back and
	// sent right after the next datagram of the same direction. At most one
	// datagram is held at a time; a held datagram that nothing follows
	// within ReorderFlush is sent on its own then.
	Reorder float64
	// DSCP selects the Differentiated Services Code Point of the datagrams
	// the relay sends in this direction: -1 leaves the sending socket's TOS
	// / Traffic Class at the kernel default, 0..63 sets it (IP_TOS or
	// IPV6_TCLASS, ECN bits zero) on the sending socket.
	DSCP int
}

// ReorderFlush is how long a datagram held back for reordering waits for a
// following datagram before it is sent anyway.
const ReorderFlush = 10 * time.Millisecond

// validate reports whether im is usable.
func (im Impairment) validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", im.Loss}, {"Duplicate", im.Duplicate}, {"Reorder", im.Reorder}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("impair: %s %v is not a probability in [0, 1]", p.name, p.v)
		}
	}
	if im.Delay < 0 {
		return fmt.Errorf("impair: negative Delay %v", im.Delay)
	}
	if im.DSCP < -1 || im.DSCP > 63 {
		return fmt.Errorf("impair: DSCP %d is neither -1 nor in 0..63", im.DSCP)
	}
	return nil
}

// Counts are the datagram counters of one direction of a Relay.
type Counts struct {
	// Received counts datagrams the relay read in this direction.
	Received uint64
	// Sent counts datagrams successfully written, duplicates included.
	Sent uint64
	// Dropped counts datagrams discarded by Loss (and the rare datagram for
	// which no upstream socket could be opened).
	Dropped uint64
	// Duplicated counts datagrams that were chosen to be sent twice.
	Duplicated uint64
	// Reordered counts held-back datagrams that were sent after a later
	// datagram; one flushed after ReorderFlush with nothing following is not
	// counted.
	Reordered uint64
	// OutOfOrder counts datagrams sent after one with a higher sequence
	// number (RFC 4737 §3.3), as numbered by the function given to
	// SetSequence: what a receiver sees as reordered, whatever the cause
	// (held back, or overtaken inside the relay).
	OutOfOrder uint64
}

// maxDatagram is the size of the receive buffers: the largest UDP payload.
const maxDatagram = 65535

// socketBuffer is the SO_RCVBUF / SO_SNDBUF the relay asks for on its
// sockets (the kernel caps it at net.core.[rw]mem_max).
const socketBuffer = 4 << 20

// Relay is a running impairment relay. Create it with New and stop it with
// Close. Its methods are safe for concurrent use.
type Relay struct {
	ln       *net.UDPConn
	addr     netip.AddrPort
	upstream netip.AddrPort

	fwd, bwd *direction

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow
	closed bool

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	seqOf atomic.Pointer[func([]byte) (uint32, bool)]

	// lnTOS is the DSCP currently applied to ln (-1: default). Only the
	// backward delay line goroutine touches it.
	lnTOS int
}

// flow is one client source address and port with its upstream socket.
type flow struct {
	client netip.AddrPort
	up     *net.UDPConn
	// tos is the DSCP currently applied to up (-1: default). Only the
	// forward delay line goroutine touches it.
	tos int
}

// New starts a relay listening on the UDP address listen (like
// "127.0.0.1:0") that forwards what it receives to upstream and relays the
// replies back. forward impairs client→upstream datagrams, backward
// upstream→client ones. seed seeds the pseudo-random decisions, so a run
// with the same seed and the same packet order makes the same decisions.
func New(listen string, upstream netip.AddrPort, forward, backward Impairment, seed int64) (*Relay, error) {
	if !upstream.IsValid() {
		return nil, errors.New("impair: invalid upstream address")
	}
	if err := forward.validate(); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if err := backward.validate(); err != nil {
		return nil, fmt.Errorf("backward: %w", err)
	}
	ua, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("impair: listen address: %w", err)
	}
	ln, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("impair: %w", err)
	}
	_ = ln.SetReadBuffer(socketBuffer)
	_ = ln.SetWriteBuffer(socketBuffer)
	r := &Relay{
		ln:       ln,
		addr:     ln.LocalAddr().(*net.UDPAddr).AddrPort(),
		upstream: upstream,
		flows:    make(map[netip.AddrPort]*flow),
		done:     make(chan struct{}),
		lnTOS:    -1,
	}
	s := uint64(seed)
	r.fwd = newDirection(r, true, forward, rand.New(rand.NewPCG(s, 0x666f7277617264)))     // "forward"
	r.bwd = newDirection(r, false, backward, rand.New(rand.NewPCG(s, 0x6261636b77617264))) // "backward"
	r.wg.Add(3)
	go r.fwd.run()
	go r.bwd.run()
	go r.readClients()
	return r, nil
}

// Addr returns the address the relay listens on, which clients send to. It
// is unspecified (0.0.0.0 or ::) when listen did not name an IP address.
func (r *Relay) Addr() netip.AddrPort { return r.addr }

// SetImpairment replaces the impairments of both directions. Datagrams
// already in a delay line keep their release time. It panics if an
// impairment is invalid (a probability outside [0, 1], a negative delay or a
// DSCP outside -1..63), as New would have refused it.
func (r *Relay) SetImpairment(forward, backward Impairment) {
	if err := forward.validate(); err != nil {
		panic("forward: " + err.Error())
	}
	if err := backward.validate(); err != nil {
		panic("backward: " + err.Error())
	}
	r.fwd.set(forward)
	r.bwd.set(backward)
}

// SetSequence gives the relay a way to read a datagram's sequence number,
// for Counts.OutOfOrder; f reports false for datagrams without one.
func (r *Relay) SetSequence(f func([]byte) (uint32, bool)) { r.seqOf.Store(&f) }

// Forward returns the counters of the client→upstream direction.
func (r *Relay) Forward() Counts { return r.fwd.counts() }

// Backward returns the counters of the upstream→client direction.
func (r *Relay) Backward() Counts { return r.bwd.counts() }

// Close stops the relay: it closes every socket, stops every goroutine and
// waits for them. Datagrams still in a delay line are discarded. Calling it
// again returns the first result.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		flows := make([]*flow, 0, len(r.flows))
		for _, f := range r.flows {
			flows = append(flows, f)
		}
		r.mu.Unlock()
		close(r.done)
		r.closeErr = r.ln.Close()
		for _, f := range flows {
			if err := f.up.Close(); err != nil && r.closeErr == nil {
				r.closeErr = err
			}
		}
		r.wg.Wait()
	})
	return r.closeErr
}

// readClients reads datagrams from clients and feeds the forward direction.
func (r *Relay) readClients() {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if r.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f := r.flowFor(src)
		if f == nil {
			if r.stopped() {
				return
			}
			r.fwd.received.Add(1)
			r.fwd.dropped.Add(1)
			continue
		}
		r.fwd.input(f, append([]byte(nil), buf[:n]...))
	}
}

// flowFor returns the flow of client src, opening its upstream socket and
// starting its reader on first use. It returns nil when the relay is closed
// or the socket cannot be opened.
func (r *Relay) flowFor(src netip.AddrPort) *flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.flows[src]; f != nil {
		return f
	}
	if r.closed {
		return nil
	}
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.upstream))
	if err != nil {
		return nil
	}
	_ = up.SetReadBuffer(socketBuffer)
	_ = up.SetWriteBuffer(socketBuffer)
	f := &flow{client: src, up: up, tos: -1}
	r.flows[src] = f
	r.wg.Add(1)
	go r.readUpstream(f)
	return f
}

// readUpstream reads the upstream's replies to flow f and feeds the
// backward direction.
func (r *Relay) readUpstream(f *flow) {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			// A connected UDP socket reports ICMP errors (ECONNREFUSED
			// when nothing listens upstream yet); only closing ends it.
			if r.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r.bwd.input(f, append([]byte(nil), buf[:n]...))
	}
}

// stopped reports whether Close has begun.
func (r *Relay) stopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// sendForward writes p to the upstream through its flow's socket with the
// given DSCP.
func (r *Relay) sendForward(f *flow, p []byte, dscp int) error {
	if f.tos != dscp {
		if err := setDSCP(f.up, dscp); err != nil {
			return err
		}
		f.tos = dscp
	}
	_, err := f.up.Write(p)
	return err
}

// sendBackward writes p to the flow's client from the listening socket with
// the given DSCP.
func (r *Relay) sendBackward(f *flow, p []byte, dscp int) error {
	if r.lnTOS != dscp {
		if err := setDSCP(r.ln, dscp); err != nil {
			return err
		}
		r.lnTOS = dscp
	}
	_, err := r.ln.WriteToUDPAddrPort(p, f.client)
	return err
}
