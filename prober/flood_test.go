package prober

// Robustness of the prober's flow sockets under hostile traffic:
// anything that lands on a probe socket must be counted, must not crash the
// receive loops, and must not disturb the measurement of the session that
// shares the sockets.

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/procnet"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/stamp"
)

const (
	floodDatagrams = 100_000
	floodSenders   = 4
	floodMaxSize   = 1500
	floodSeed      = 0x11a3a5
	// floodBatch datagrams are sent before the test waits for the receive
	// loops to have counted them all. Spread over 8 flow sockets they stay
	// far below a socket's default receive buffer, so the kernel drops
	// none and the count can be exact (and the session's own replies are
	// never crowded out: its loss must stay 0).
	floodBatch = 256
)

// floodPoll polls cond every millisecond until it holds, and fails the test
// with what() when d has passed.
func floodPoll(t *testing.T, d time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what())
		}
		time.Sleep(time.Millisecond)
	}
}

// floodTarget is a session probing a real reflector on loopback, with its
// module's flow sockets and the module's bad-data and unmatched counters.
type floodTarget struct {
	mgr    *Manager
	mod    *config.Module
	s      *Session
	dst    netip.AddrPort   // the reflector
	flows  []netip.AddrPort // the flow sockets, as 127.0.0.1:port
	module string
}

func startFloodTarget(t *testing.T, module string) *floodTarget {
	t.Helper()
	ft := &floodTarget{dst: startReflector(t, "127.0.0.1:0"), mod: fastModule(), module: module}
	ft.mgr = NewManager(Options{}, nil, discard)
	t.Cleanup(ft.mgr.Close)
	s, _, err := ft.mgr.Get(context.Background(), module, ft.mod, ft.dst.String())
	if err != nil {
		t.Fatal(err)
	}
	ft.s = s
	testlab.WaitFor(t, 10*time.Second, "the session's first replies", func() bool { return s.Snapshot().Received >= 20 })
	for i := range ft.mod.Flows {
		p := s.pool.flowPort(ft.dst.Addr(), i)
		if p == 0 {
			t.Fatalf("flow %d has no socket", i)
		}
		ft.flows = append(ft.flows, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p))
	}
	return ft
}

func (ft *floodTarget) bad() float64 {
	return testutil.ToFloat64(ft.mgr.metrics.badReplies.WithLabelValues(ft.module))
}

func (ft *floodTarget) unmatched() float64 {
	return testutil.ToFloat64(ft.mgr.metrics.unmatched.WithLabelValues(ft.module))
}

func (ft *floodTarget) drops() string {
	var b strings.Builder
	for _, f := range ft.flows {
		fmt.Fprintf(&b, " %d:%d", f.Port(), procnet.PortDrops(f.Port()))
	}
	return "kernel drops per flow socket (port:drops):" + b.String()
}

// checkNoLoss fails the test if the session has lost a probe.
func (ft *floodTarget) checkNoLoss(t *testing.T, when string) Snapshot {
	t.Helper()
	sn := ft.s.Snapshot()
	if sn.Lost != 0 || sn.WindowLost != 0 {
		t.Fatalf("%s: the session lost probes: lost %d, window %d/%d, late %d; %s",
			when, sn.Lost, sn.WindowLost, sn.WindowSent, sn.Late, ft.drops())
	}
	return sn
}

// waitDecided waits until every probe sent before end is decided: a
// Snapshot sweeps probes older than the module's timeout as lost.
func (ft *floodTarget) waitDecided(t *testing.T, end time.Time) Snapshot {
	t.Helper()
	testlab.WaitFor(t, 10*time.Second, "the probes sent during the flood to be decided", func() bool {
		return time.Since(end) > ft.mod.Timeout+ft.mod.Interval
	})
	return ft.s.Snapshot()
}

// floodHostile fills buf with hostile datagram i and returns its length and
// whether it is under 36 octets. A third are shorter than the shortest
// Session-Reflector packet a sender accepts (random content), a tenth are well-formed Session-Reflector packets —
// with the session's own SSID, SSID 0 or a random one, and a Sender
// Sequence Number far from anything sent — and the rest are random octets
// of a random size 36..1500.
func floodHostile(rng *rand.Rand, buf []byte, ssid uint16, sent uint64) (n int, short bool) {
	switch k := rng.IntN(30); {
	case k < 10:
		n = rng.IntN(stamp.MinReflectorReplyLen)
	case k < 13:
		n = stamp.ReflectorPacketLen + rng.IntN(floodMaxSize-stamp.ReflectorPacketLen+1)
		b := buf[:n]
		clear(b)
		now := stamp.NewTimestamp(time.Now())
		p := stamp.ReflectorPacket{
			Sequence:         rng.Uint32(),
			Timestamp:        now,
			ReceiveTimestamp: now,
			// Half a sequence space away from the session's probes.
			SenderSequence:  uint32(sent) + 1<<31 + uint32(rng.IntN(1<<20)),
			SenderTimestamp: now,
			SenderTTL:       64,
		}
		switch rng.IntN(3) {
		case 0:
			p.SSID = ssid
		case 1:
			p.SSID = 0 // TWAMP-Light style: matched by address, if at all
		default:
			p.SSID = uint16(rng.Uint32())
		}
		p.MarshalTo(b)
		return n, false
	default:
		n = stamp.MinReflectorReplyLen + rng.IntN(floodMaxSize-stamp.MinReflectorReplyLen+1)
	}
	b := buf[:n]
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
	return n, n < stamp.MinReflectorReplyLen
}

// TestFloodFlowSockets probes a real reflector on loopback (one probe every
// 5ms over 8 flow sockets) while 100,000 hostile datagrams of random sizes
// 0..1500 (fixed seed) are sent at the session's flow sockets from four
// other loopback sockets, in batches of 256 that the receive loops must
// have counted before the next is sent.
//
// The counting identity: replies are demultiplexed by (source address,
// SSID), and no session probes the hostile sockets' addresses, so whatever
// its content, a hostile datagram matches no session: one under 36 octets
// is bad data, any other (random octets, or a well-formed
// Session-Reflector packet with the session's SSID, SSID 0 or another) is
// unmatched. Hence, exactly: Δ bad_data = hostile datagrams under 36
// octets, Δ unmatched = the others. The batches keep the kernel from
// dropping any (a drop would show as a timeout, with the sockets' kernel
// drop counters in the message).
//
// Throughout, the session must lose nothing (Lost and WindowLost 0) and
// count no late or duplicate reply.
func TestFloodFlowSockets(t *testing.T) {
	ft := startFloodTarget(t, "flood")
	s := ft.s
	if b, u := ft.bad(), ft.unmatched(); b != 0 || u != 0 {
		t.Fatalf("before the flood: bad data %v, unmatched %v; the reflector's own replies must all match", b, u)
	}
	conns := make([]*net.UDPConn, floodSenders)
	for i := range conns {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}

	rng := rand.New(rand.NewPCG(floodSeed, 1))
	buf := make([]byte, floodMaxSize+8)
	var short, long int
	before := ft.checkNoLoss(t, "before the flood")
	begin := time.Now()
	for sent := 0; sent < floodDatagrams; {
		sn := ft.checkNoLoss(t, fmt.Sprintf("after %d hostile datagrams", sent))
		for end := min(sent+floodBatch, floodDatagrams); sent < end; sent++ {
			n, isShort := floodHostile(rng, buf, uint16(s.ssid.Load()), sn.Sent)
			to := ft.flows[sent%len(ft.flows)]
			if _, err := conns[sent%len(conns)].WriteToUDPAddrPort(buf[:n], to); err != nil {
				t.Fatalf("sending hostile datagram %d to %v: %v", sent, to, err)
			}
			if isShort {
				short++
			} else {
				long++
			}
		}
		floodPoll(t, 10*time.Second, func() string {
			return fmt.Sprintf("the %d hostile datagrams sent so far to be counted: bad data %v (want %d), unmatched %v (want %d); %s",
				sent, ft.bad(), short, ft.unmatched(), long, ft.drops())
		}, func() bool { return ft.bad()+ft.unmatched() >= float64(sent) })
	}
	end := time.Now()
	during := ft.checkNoLoss(t, "at the end of the flood")
	after := ft.waitDecided(t, end)
	bad, unmatched := ft.bad(), ft.unmatched()

	t.Logf("sent %d hostile datagrams (%d under 36 octets, %d of 36 or more) to %d flow sockets in %v; counted: bad data %v, unmatched %v",
		short+long, short, long, len(ft.flows), end.Sub(begin).Round(time.Millisecond), bad, unmatched)
	t.Logf("session meanwhile: %d probes sent, %d answered; in all sent %d, received %d, lost %d, late %d, duplicated %d, window %d/%d lost",
		during.Sent-before.Sent, during.Received-before.Received, after.Sent, after.Received, after.Lost, after.Late, after.Duplicated, after.WindowLost, after.WindowSent)

	if bad != float64(short) {
		t.Errorf("bad data %v, want exactly the %d hostile datagrams under 36 octets", bad, short)
	}
	if unmatched != float64(long) {
		t.Errorf("unmatched %v, want exactly the %d hostile datagrams of 36 octets or more (none comes from the reflector's address)", unmatched, long)
	}
	if after.Lost != 0 || after.WindowLost != 0 {
		t.Errorf("the session lost probes: lost %d, window %d/%d", after.Lost, after.WindowLost, after.WindowSent)
	}
	if after.Late != 0 || after.Duplicated != 0 {
		t.Errorf("hostile datagrams reached the session: late %d, duplicated %d", after.Late, after.Duplicated)
	}
	if during.Received <= before.Received {
		t.Errorf("no probe answered during the flood (%d then %d): the test measured nothing", before.Received, during.Received)
	}
	if after.Received > after.Sent {
		t.Errorf("received %d > sent %d", after.Received, after.Sent)
	}
}

// rawUDP4 sends UDP datagrams with any IPv4 source address and port over a
// raw socket (IP_HDRINCL), to forge replies that seem to come from the
// reflector. It needs CAP_NET_RAW.
type rawUDP4 struct{ fd int }

func newRawUDP4(t *testing.T) *rawUDP4 {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Skipf("raw socket (needs CAP_NET_RAW): %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &rawUDP4{fd: fd}
}

// send writes payload as a UDP datagram from src to dst. The kernel fills
// the IP checksum; a UDP checksum of 0 means none (RFC 768).
func (r *rawUDP4) send(src, dst netip.AddrPort, payload []byte) error {
	pkt := make([]byte, 28+len(payload))
	pkt[0] = 0x45 // IPv4, 5-word header
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64 // TTL
	pkt[9] = unix.IPPROTO_UDP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	binary.BigEndian.PutUint16(pkt[20:], src.Port())
	binary.BigEndian.PutUint16(pkt[22:], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return unix.Sendto(r.fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
}

// TestFloodForgedRepliesFromReflector forges datagrams that carry the
// reflector's own address and port as their source (a raw socket; skipped
// without CAP_NET_RAW), so that they pass the address check of the demux,
// and sends them at the session's flow sockets in four kinds, 2,000 each:
//
//   - well-formed replies with a wrong SSID: unmatched;
//   - well-formed replies with SSID 0 (the TWAMP-Light fallback matches the
//     session by address) and a Sender Sequence Number half a sequence
//     space away from anything sent;
//   - well-formed replies with the session's own SSID and such a number;
//   - datagrams under 36 octets, too short for any reply: bad data.
//
// Each kind must be counted, one for one, in bad data, unmatched, or the
// session's late or duplicated counters, and none may disturb the session:
// no loss, no extra received probe. After each batch a short datagram is
// sent to every flow socket from an ordinary socket: each receive loop
// reads its socket in order, so once those are counted, so is every forged
// datagram before them.
func TestFloodForgedRepliesFromReflector(t *testing.T) {
	raw := newRawUDP4(t)
	ft := startFloodTarget(t, "forged")
	s := ft.s
	marker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { marker.Close() })

	const perKind = 2000
	rng := rand.New(rand.NewPCG(floodSeed, 2))
	kinds := []struct {
		name string
		make func(sent uint64) []byte
	}{
		{"wrong SSID", func(sent uint64) []byte {
			ssid := uint16(rng.Uint32())
			for ssid == 0 || ssid == uint16(s.ssid.Load()) {
				ssid = uint16(rng.Uint32())
			}
			return floodForged(rng, ssid, uint32(sent)+uint32(rng.IntN(1<<20)))
		}},
		{"SSID 0, far sequence number", func(sent uint64) []byte {
			return floodForged(rng, 0, uint32(sent)+1<<31+uint32(rng.IntN(1<<20)))
		}},
		{"own SSID, far sequence number", func(sent uint64) []byte {
			return floodForged(rng, uint16(s.ssid.Load()), uint32(sent)+1<<31+uint32(rng.IntN(1<<20)))
		}},
		{"under 36 octets", func(uint64) []byte {
			b := make([]byte, rng.IntN(stamp.MinReflectorReplyLen))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		}},
	}
	for _, kind := range kinds {
		// Markers go where this kind's forged datagrams cannot: short
		// ones (bad data) after long forgeries, long ones (unmatched: the
		// marker socket is no reflector) after short forgeries.
		isShort := kind.name == "under 36 octets"
		mark, markCount := []byte("marker"), ft.bad
		if isShort {
			mark, markCount = make([]byte, stamp.ReflectorPacketLen), ft.unmatched
		}
		sn0 := ft.checkNoLoss(t, "before "+kind.name)
		bad0, unm0, mark0 := ft.bad(), ft.unmatched(), markCount()
		markers := 0
		for sent := 0; sent < perKind; {
			sn := ft.checkNoLoss(t, kind.name)
			for end := min(sent+floodBatch, perKind); sent < end; sent++ {
				to := ft.flows[sent%len(ft.flows)]
				if err := raw.send(ft.dst, to, kind.make(sn.Sent)); err != nil {
					t.Fatalf("raw send to %v: %v", to, err)
				}
			}
			for _, to := range ft.flows {
				if _, err := marker.WriteToUDPAddrPort(mark, to); err != nil {
					t.Fatal(err)
				}
				markers++
			}
			floodPoll(t, 10*time.Second, func() string {
				return fmt.Sprintf("%d markers to be counted (%v); %s", markers, markCount()-mark0, ft.drops())
			}, func() bool { return markCount()-mark0 >= float64(markers) })
		}
		sn1 := ft.checkNoLoss(t, "after "+kind.name)
		dBad, dUnm := ft.bad()-bad0, ft.unmatched()-unm0
		if isShort {
			dUnm -= float64(markers)
		} else {
			dBad -= float64(markers)
		}
		dLate, dDup := sn1.Late-sn0.Late, sn1.Duplicated-sn0.Duplicated
		counted := dBad + dUnm + float64(dLate+dDup)
		t.Logf("%-30s sent %d: bad data +%v, unmatched +%v, late +%d, duplicated +%d; counted %v", kind.name+":", perKind, dBad, dUnm, dLate, dDup, counted)
		if counted != perKind {
			t.Errorf("%s: %d forged datagrams from the reflector's address, %v counted (bad data %v, unmatched %v, late %d, duplicated %d): %v vanished without a trace",
				kind.name, perKind, counted, dBad, dUnm, dLate, dDup, perKind-counted)
		}
		if sn1.Received-sn0.Received > sn1.Sent-sn0.Sent+uint64(sn0.InFlight) {
			t.Errorf("%s: %d replies received for %d probes sent: forged replies counted as answers", kind.name, sn1.Received-sn0.Received, sn1.Sent-sn0.Sent)
		}
	}
	after := ft.waitDecided(t, time.Now())
	if after.Lost != 0 || after.WindowLost != 0 {
		t.Errorf("the session lost probes: lost %d, window %d/%d", after.Lost, after.WindowLost, after.WindowSent)
	}
	if after.Received > after.Sent {
		t.Errorf("received %d > sent %d", after.Received, after.Sent)
	}
}

// floodForged returns a well-formed Session-Reflector packet of a random
// size 44..200 with the given SSID and Sender Sequence Number.
func floodForged(rng *rand.Rand, ssid uint16, seq uint32) []byte {
	b := make([]byte, stamp.ReflectorPacketLen+rng.IntN(157))
	now := stamp.NewTimestamp(time.Now())
	p := stamp.ReflectorPacket{Sequence: seq, Timestamp: now, ReceiveTimestamp: now, SSID: ssid,
		SenderSequence: seq, SenderTimestamp: now, SenderTTL: 64}
	p.MarshalTo(b)
	return b
}
