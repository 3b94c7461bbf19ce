//go:build linux

package impair

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"golang.org/x/sys/unix"
)

// none is an impairment that changes nothing, TOS included.
var none = Impairment{DSCP: -1}

// waitTimeout bounds every wait for a condition.
const waitTimeout = 10 * time.Second

// datagram is one received datagram with its TOS octet (-1 if unknown).
type datagram struct {
	data []byte
	from netip.AddrPort
	tos  int
	at   time.Time
}

// enableRecvTOS makes c report the TOS octet of every received datagram.
func enableRecvTOS(t testing.TB, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// readDatagram reads one datagram from c together with its IP_TOS control
// message.
func readDatagram(c *net.UDPConn) (datagram, error) {
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return datagram{}, err
	}
	d := datagram{data: buf[:n], from: from, tos: -1, at: time.Now()}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return datagram{}, err
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) > 0 {
			d.tos = int(m.Data[0])
		}
	}
	return d, nil
}

// echoServer answers every datagram to its sender and remembers what it saw.
type echoServer struct {
	conn     *net.UDPConn
	received atomic.Uint64
	lastTOS  atomic.Int64

	mu      sync.Mutex
	sources map[netip.AddrPort]int
}

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	enableRecvTOS(t, c)
	e := &echoServer{conn: c, sources: make(map[netip.AddrPort]int)}
	e.lastTOS.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d, err := readDatagram(c)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.mu.Lock()
			e.sources[d.from]++
			e.mu.Unlock()
			e.lastTOS.Store(int64(d.tos))
			e.received.Add(1)
			_, _ = c.WriteToUDPAddrPort(d.data, d.from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return e
}

func (e *echoServer) addr() netip.AddrPort {
	return e.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (e *echoServer) sourceCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sources)
}

// client is a UDP socket connected to the relay whose replies are collected
// in got by a reader goroutine.
type client struct {
	conn  *net.UDPConn
	got   chan datagram
	count atomic.Uint64
}

func newClient(t testing.TB, to netip.AddrPort) *client {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	enableRecvTOS(t, c)
	cl := &client{conn: c, got: make(chan datagram, 100000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d, err := readDatagram(c)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED
			}
			cl.count.Add(1)
			cl.got <- d
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return cl
}

// next returns the next reply, failing the test if none comes in time.
func (c *client) next(t testing.TB) datagram {
	t.Helper()
	select {
	case d := <-c.got:
		return d
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a reply")
		return datagram{}
	}
}

// drain returns the replies received so far without waiting.
func (c *client) drain() []datagram {
	var ds []datagram
	for {
		select {
		case d := <-c.got:
			ds = append(ds, d)
		default:
			return ds
		}
	}
}

func seqPayload(i int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(i))
	copy(b[8:], "impair!!")
	return b
}

func seqOf(t testing.TB, d datagram) int {
	t.Helper()
	if len(d.data) != 16 {
		t.Fatalf("reply of %d octets, want 16", len(d.data))
	}
	return int(binary.BigEndian.Uint64(d.data))
}

// sendSeq sends n sequence-numbered datagrams, at most window of them ahead
// of what the relay has read (relayed counts the relay's reads of earlier
// clients), so that no socket buffer overflows.
func sendSeq(t testing.TB, c *client, r *Relay, n int) {
	t.Helper()
	const window = 32
	base := r.Forward().Received
	for i := range n {
		if _, err := c.conn.Write(seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		if (i+1)%window == 0 || i == n-1 {
			want := base + uint64(i+1)
			testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "the relay to read the datagrams", func() bool { return r.Forward().Received >= want })
		}
	}
}

// waitCounts waits until the relay's counters are fwd and bwd: a counter is
// updated after its datagram's write returns, which may be after the
// datagram has been answered.
func waitCounts(t testing.TB, r *Relay, fwd, bwd Counts) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		f, b := r.Forward(), r.Backward()
		if f == fwd && b == bwd {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Forward() = %+v, Backward() = %+v; want %+v and %+v", f, b, fwd, bwd)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func newRelay(t testing.TB, upstream netip.AddrPort, fwd, bwd Impairment) *Relay {
	t.Helper()
	r, err := New("127.0.0.1:0", upstream, fwd, bwd, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func TestPassThrough(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), none, none)
	if !r.Addr().Addr().IsLoopback() || r.Addr().Port() == 0 {
		t.Fatalf("Addr() = %v", r.Addr())
	}
	const n = 100
	clients := []*client{newClient(t, r.Addr()), newClient(t, r.Addr()), newClient(t, r.Addr())}
	for _, c := range clients {
		sendSeq(t, c, r, n)
	}
	for ci, c := range clients {
		var seqs []int
		for range n {
			seqs = append(seqs, seqOf(t, c.next(t)))
		}
		slices.Sort(seqs)
		for i, s := range seqs {
			if s != i {
				t.Fatalf("client %d: sorted replies %v, want 0..%d once each", ci, seqs, n-1)
			}
		}
	}
	if got := e.sourceCount(); got != len(clients) {
		t.Errorf("upstream saw %d source ports, want %d", got, len(clients))
	}
	total := uint64(n * len(clients))
	want := Counts{Received: total, Sent: total}
	waitCounts(t, r, want, want)
	for ci, c := range clients {
		if extra := c.drain(); len(extra) > 0 {
			t.Errorf("client %d: %d unexpected extra replies", ci, len(extra))
		}
	}
}

func TestTotalLoss(t *testing.T) {
	const n = 100
	t.Run("forward", func(t *testing.T) {
		e := startEcho(t)
		r := newRelay(t, e.addr(), Impairment{Loss: 1, DSCP: -1}, none)
		c := newClient(t, r.Addr())
		sendSeq(t, c, r, n)
		testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "drops", func() bool { return r.Forward().Dropped == n })
		if got, want := r.Forward(), (Counts{Received: n, Dropped: n}); got != want {
			t.Errorf("Forward() = %+v, want %+v", got, want)
		}
		if got := e.received.Load(); got != 0 {
			t.Errorf("upstream received %d datagrams, want 0", got)
		}
		if got := c.drain(); len(got) != 0 {
			t.Errorf("client received %d replies, want 0", len(got))
		}
	})
	t.Run("backward", func(t *testing.T) {
		e := startEcho(t)
		r := newRelay(t, e.addr(), none, Impairment{Loss: 1, DSCP: -1})
		c := newClient(t, r.Addr())
		sendSeq(t, c, r, n)
		testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "drops", func() bool { return r.Backward().Dropped == n })
		if got := e.received.Load(); got != n {
			t.Errorf("upstream received %d datagrams, want %d", got, n)
		}
		if got, want := r.Backward(), (Counts{Received: n, Dropped: n}); got != want {
			t.Errorf("Backward() = %+v, want %+v", got, want)
		}
		if got := c.drain(); len(got) != 0 {
			t.Errorf("client received %d replies, want 0", len(got))
		}
	})
}

func TestLossRate(t *testing.T) {
	for _, tc := range []struct {
		fwd, bwd float64 // loss per direction
		tol      float64
	}{
		{fwd: 0.5, tol: 0.05},
		{fwd: 0.1, tol: 0.03},
		{fwd: 0.05, bwd: 0.05, tol: 0.03},
	} {
		t.Run(fmt.Sprintf("fwd=%v,bwd=%v", tc.fwd, tc.bwd), func(t *testing.T) {
			const n = 2000
			e := startEcho(t)
			r := newRelay(t, e.addr(), Impairment{Loss: tc.fwd, DSCP: -1}, Impairment{Loss: tc.bwd, DSCP: -1})
			c := newClient(t, r.Addr())
			sendSeq(t, c, r, n)
			testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "all datagrams to be relayed", func() bool {
				f, b := r.Forward(), r.Backward()
				return f.Sent+f.Dropped == n && b.Received == f.Sent && b.Sent+b.Dropped == b.Received &&
					c.count.Load() == b.Sent
			})
			f, b := r.Forward(), r.Backward()
			if f.Received != n || f.Duplicated != 0 || f.Reordered != 0 {
				t.Errorf("Forward() = %+v", f)
			}
			if got := e.received.Load(); got != f.Sent {
				t.Errorf("upstream received %d, forward Sent %d", got, f.Sent)
			}
			got := c.drain()
			if uint64(len(got)) != b.Sent {
				t.Errorf("client received %d, backward Sent %d", len(got), b.Sent)
			}
			want := 1 - (1-tc.fwd)*(1-tc.bwd)
			loss := 1 - float64(len(got))/n
			t.Logf("end-to-end loss %.4f (want %.4f ± %.2f); forward %+v, backward %+v", loss, want, tc.tol, f, b)
			if loss < want-tc.tol || loss > want+tc.tol {
				t.Errorf("end-to-end loss %.4f, want %.4f ± %.2f", loss, want, tc.tol)
			}
			if fl := float64(f.Dropped) / float64(f.Received); fl < tc.fwd-tc.tol || fl > tc.fwd+tc.tol {
				t.Errorf("forward loss %.4f, want %v ± %v", fl, tc.fwd, tc.tol)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	e := startEcho(t)
	const delay = 5 * time.Millisecond
	r := newRelay(t, e.addr(), Impairment{Delay: delay, DSCP: -1}, Impairment{Delay: delay, DSCP: -1})
	c := newClient(t, r.Addr())
	const n = 60
	rtts := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := c.conn.Write(seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		d := c.next(t)
		if s := seqOf(t, d); s != i {
			t.Fatalf("reply %d, want %d", s, i)
		}
		rtts = append(rtts, d.at.Sub(start))
	}
	slices.Sort(rtts)
	median := rtts[n/2]
	t.Logf("RTT min %v median %v p90 %v max %v", rtts[0], median, rtts[n*9/10], rtts[n-1])
	if rtts[0] < 2*delay {
		t.Errorf("minimum RTT %v < %v", rtts[0], 2*delay)
	}
	if median >= 2*delay+2*time.Millisecond {
		t.Errorf("median RTT %v ≥ %v", median, 2*delay+2*time.Millisecond)
	}
}

func TestDelayChange(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), none, none)
	c := newClient(t, r.Addr())
	rtt := func(i int) time.Duration {
		start := time.Now()
		if _, err := c.conn.Write(seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		return c.next(t).at.Sub(start)
	}
	r.SetImpairment(Impairment{Delay: 20 * time.Millisecond, DSCP: -1}, none)
	if got := rtt(0); got < 20*time.Millisecond {
		t.Errorf("RTT %v after setting a 20ms delay", got)
	}
	r.SetImpairment(none, none)
	// The smallest of a few: one exchange can be slowed by a stalled
	// machine, the delay would slow them all.
	fastest := rtt(1)
	for i := 2; i <= 5; i++ {
		fastest = min(fastest, rtt(i))
	}
	if fastest >= 20*time.Millisecond {
		t.Errorf("fastest RTT %v of 5 after removing the delay", fastest)
	}
}

func TestDuplicate(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), Impairment{Duplicate: 1, DSCP: -1}, none)
	c := newClient(t, r.Addr())
	const n = 20
	sendSeq(t, c, r, n)
	seen := make(map[int]int)
	for range 2 * n {
		seen[seqOf(t, c.next(t))]++
	}
	for i := range n {
		if seen[i] != 2 {
			t.Errorf("datagram %d arrived %d times, want 2", i, seen[i])
		}
	}
	waitCounts(t, r, Counts{Received: n, Sent: 2 * n, Duplicated: n}, Counts{Received: 2 * n, Sent: 2 * n})
	if extra := c.drain(); len(extra) != 0 {
		t.Errorf("%d extra replies", len(extra))
	}
}

func TestReorder(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), Impairment{Reorder: 0.5, DSCP: -1}, none)
	c := newClient(t, r.Addr())
	const n = 400
	sendSeq(t, c, r, n)
	seqs := make([]int, 0, n)
	for range n {
		seqs = append(seqs, seqOf(t, c.next(t)))
	}
	late, maxSeen := 0, -1
	for _, s := range seqs {
		if s < maxSeen {
			late++
		}
		maxSeen = max(maxSeen, s)
	}
	testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "forward counts", func() bool { return r.Forward().Sent == n })
	f := r.Forward()
	t.Logf("%d of %d replies arrived after a later one; forward %+v", late, n, f)
	if late == 0 || f.Reordered == 0 {
		t.Errorf("no reordering: %d late replies, Forward() = %+v", late, f)
	}
	sorted := slices.Sorted(slices.Values(seqs))
	for i, s := range sorted {
		if s != i {
			t.Fatalf("replies are not 0..%d once each", n-1)
		}
	}
	if f.Sent != n || f.Dropped != 0 || f.Duplicated != 0 {
		t.Errorf("Forward() = %+v", f)
	}
}

func TestReorderSwapsPairs(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), Impairment{Reorder: 1, DSCP: -1}, none)
	c := newClient(t, r.Addr())

	// A lone held datagram is flushed after ReorderFlush.
	start := time.Now()
	if _, err := c.conn.Write(seqPayload(0)); err != nil {
		t.Fatal(err)
	}
	d := c.next(t)
	if got := d.at.Sub(start); got < ReorderFlush {
		t.Errorf("held datagram came back after %v, want ≥ %v", got, ReorderFlush)
	}
	if r.Forward().Reordered != 0 {
		t.Errorf("a flushed datagram counted as reordered: %+v", r.Forward())
	}

	// Back-to-back datagrams come back in swapped pairs.
	for i := 1; i <= 4; i++ {
		if _, err := c.conn.Write(seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	for range 4 {
		got = append(got, seqOf(t, c.next(t)))
	}
	if want := []int{2, 1, 4, 3}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	waitCounts(t, r, Counts{Received: 5, Sent: 5, Reordered: 2}, Counts{Received: 5, Sent: 5})
}

func TestDSCP(t *testing.T) {
	e := startEcho(t)
	r := newRelay(t, e.addr(), Impairment{DSCP: 46}, Impairment{DSCP: 10})
	c := newClient(t, r.Addr())
	roundTrip := func(i int) datagram {
		t.Helper()
		if _, err := c.conn.Write(seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		return c.next(t)
	}
	d := roundTrip(0)
	if got, want := e.lastTOS.Load(), int64(46<<2); got != want {
		t.Errorf("upstream saw TOS %#x, want %#x", got, want)
	}
	if got, want := d.tos, 10<<2; got != want {
		t.Errorf("client saw TOS %#x, want %#x", got, want)
	}

	r.SetImpairment(none, Impairment{DSCP: 63})
	d = roundTrip(1)
	if got := e.lastTOS.Load(); got != 0 {
		t.Errorf("after DSCP -1 upstream saw TOS %#x, want 0", got)
	}
	if got, want := d.tos, 63<<2; got != want {
		t.Errorf("client saw TOS %#x, want %#x", got, want)
	}
}

func TestNewRejectsInvalid(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:9")
	for _, im := range []Impairment{
		{Loss: -0.1, DSCP: -1},
		{Loss: 1.5, DSCP: -1},
		{Duplicate: 2, DSCP: -1},
		{Reorder: -1, DSCP: -1},
		{Delay: -time.Second, DSCP: -1},
		{DSCP: 64},
		{DSCP: -2},
	} {
		if r, err := New("127.0.0.1:0", up, im, none, 1); err == nil {
			r.Close()
			t.Errorf("New accepted forward %+v", im)
		}
		if r, err := New("127.0.0.1:0", up, none, im, 1); err == nil {
			r.Close()
			t.Errorf("New accepted backward %+v", im)
		}
	}
	if _, err := New("127.0.0.1:0", netip.AddrPort{}, none, none, 1); err == nil {
		t.Error("New accepted an invalid upstream")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	e := startEcho(t)
	before := runtime.NumGoroutine()
	r, err := New("127.0.0.1:0", e.addr(), Impairment{Delay: time.Hour, Reorder: 0.5, DSCP: -1}, none, 7)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range 5 {
			if _, err := c.Write(seqPayload(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	testlab.WaitEvery(t, waitTimeout, 200*time.Microsecond, "the relay to read the datagrams", func() bool { return r.Forward().Received == 15 })
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before New, %d after Close", before, after)
	}
	if got := e.received.Load(); got != 0 {
		t.Errorf("upstream received %d datagrams still in the delay line at Close", got)
	}
}
