package reflector

// Robustness of the reflector under hostile load: a flood of
// random datagrams must neither crash it, nor leave a datagram unaccounted
// for, nor be answered with more octets than it sent; and a per-source
// limit must keep one flooding source from starving the others.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/internal/procnet"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/stamp"
)

const (
	floodDatagrams = 100_000
	floodSockets   = 4
	floodMaxSize   = 1500
	floodSeed      = 0x11a3a5
	// floodReadIdle ends a reply reader once the flood is over and no
	// reply came for this long. It only bounds how long the readers drain
	// their queues: a reply it misses is not checked, never a failure.
	floodReadIdle = 200 * time.Millisecond
)

// floodCond polls cond every millisecond until it holds, and fails the test
// with what() when d has passed.
func floodCond(t *testing.T, d time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what())
		}
		time.Sleep(time.Millisecond)
	}
}

// reflectorCounts are the reflector's four packet counters.
type reflectorCounts struct{ received, reflected, badData, throttled float64 }

func (r *Reflector) counts() reflectorCounts {
	return reflectorCounts{
		received:  testutil.ToFloat64(r.m.received),
		reflected: testutil.ToFloat64(r.m.reflected),
		badData:   testutil.ToFloat64(r.m.badData),
		throttled: testutil.ToFloat64(r.m.throttled),
	}
}

func (c reflectorCounts) String() string {
	return fmt.Sprintf("received %.0f, reflected %.0f, bad_data %.0f, throttled %.0f", c.received, c.reflected, c.badData, c.throttled)
}

// balanced reports whether every datagram received is accounted for.
func (c reflectorCounts) balanced() bool {
	return c.received == c.reflected+c.badData+c.throttled
}

// floodReply is what a reply reader learnt from one reply.
type floodReply struct {
	n    int            // octets
	idx  uint32         // Sender Sequence Number: the index of the datagram it answers
	ssid uint16         // SSID
	from netip.AddrPort // source
}

// floodDatagram fills buf with datagram idx of the flood and returns its
// length. A tenth are valid STAMP Session-Sender packets (half of them of
// 44 octets, the others longer, with a Class of Service TLV and Extra
// Padding when there is room, or zero padding), a
// third are shorter than 44 octets with random content, and the rest are
// random octets of a random size 0..1500. Every datagram of 44 octets or
// more carries idx in its first four octets, the Sender Sequence Number, so
// that each reply names the exact request it answers.
func floodDatagram(rng *rand.Rand, buf []byte, idx uint32) int {
	var n int
	switch k := rng.IntN(30); {
	case k < 3: // valid STAMP, half of them of the minimum size
		n = stamp.SenderPacketLen
		if rng.IntN(2) == 0 {
			n += rng.IntN(floodMaxSize - stamp.SenderPacketLen + 1)
		}
		b := buf[:n]
		clear(b)
		p := stamp.SenderPacket{Sequence: idx, Timestamp: stamp.NewTimestamp(time.Now()),
			ErrorEstimate: stamp.NewErrorEstimate(false, time.Millisecond), SSID: uint16(rng.Uint32())}
		p.MarshalTo(b)
		rest := b[stamp.SenderPacketLen:]
		if rng.IntN(2) == 0 && len(rest) >= stamp.TLVHeaderLen+stamp.ClassOfServiceLen {
			var v [stamp.ClassOfServiceLen]byte
			(&stamp.ClassOfService{DSCP1: uint8(rng.IntN(64))}).MarshalTo(v[:])
			stamp.AppendTLV(rest[:0], stamp.TLVFlagU, stamp.TLVClassOfService, v[:])
			if pad := rest[stamp.TLVHeaderLen+stamp.ClassOfServiceLen:]; len(pad) >= stamp.TLVHeaderLen {
				stamp.AppendTLV(pad[:0], stamp.TLVFlagU, stamp.TLVExtraPadding, pad[stamp.TLVHeaderLen:])
			}
		}
		return n
	case k < 13: // too short
		n = rng.IntN(stamp.SenderPacketLen)
	default: // random
		n = rng.IntN(floodMaxSize + 1)
	}
	b := buf[:n]
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
	if n >= stamp.SenderPacketLen {
		binary.BigEndian.PutUint32(b, idx)
	}
	return n
}

// TestFloodAccountingAndAmplification sends 100,000 datagrams of random
// sizes 0..1500 (fixed seed) at a reflector from four sockets as fast as
// they go, reading the replies concurrently, and asserts:
//   - the reflector survives and still answers afterwards;
//   - once quiescent, received = reflected + bad_data + throttled, and no
//     counter exceeds what was sent (the kernel may drop datagrams when the
//     socket buffer overflows: the reflector's received counter, not the
//     number sent, is the reference);
//   - no amplification: every reply answers exactly one datagram of 44
//     octets or more, sent from the socket it came back to, has exactly its
//     length and SSID, comes from the reflector's address, and no datagram
//     is answered twice; nothing under 44 octets is answered.
func TestFloodAccountingAndAmplification(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	dst := r.Addrs()[0]

	// Written by the senders (each its own range), read after they end.
	sizes := make([]int16, floodDatagrams)
	ssids := make([]uint16, floodDatagrams)
	per := floodDatagrams / floodSockets

	conns := make([]*udpsock.Conn, floodSockets)
	for i := range conns {
		conns[i] = client(t, "udp4", 0)
		conns[i].SetReadBuffer(4 << 20) // capped by net.core.rmem_max
	}

	var floodOver atomic.Bool
	replies := make([][]floodReply, floodSockets)
	readErrs := make([]error, floodSockets)
	var readers sync.WaitGroup
	for k, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 1<<16) // a reply of any size is seen whole
			for {
				c.SetReadDeadline(time.Now().Add(floodReadIdle))
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if floodOver.Load() {
						return
					}
					continue
				}
				if err != nil {
					readErrs[k] = err
					return
				}
				fr := floodReply{n: n, from: from, idx: ^uint32(0)}
				if n >= stamp.ReflectorPacketLen {
					fr.idx = binary.BigEndian.Uint32(buf[24:28])
					fr.ssid = binary.BigEndian.Uint16(buf[14:16])
				}
				replies[k] = append(replies[k], fr)
			}
		}()
	}

	var sent [floodSockets]struct{ short, long, errs int }
	var senders sync.WaitGroup
	begin := time.Now()
	for k, c := range conns {
		senders.Add(1)
		go func() {
			defer senders.Done()
			rng := rand.New(rand.NewPCG(floodSeed, uint64(k)))
			buf := make([]byte, floodMaxSize+8)
			for i := k * per; i < (k+1)*per; i++ {
				n := floodDatagram(rng, buf, uint32(i))
				if _, err := c.WriteToUDPAddrPort(buf[:n], dst); err != nil {
					sizes[i] = -1
					sent[k].errs++
					if sent[k].errs == 1 {
						t.Errorf("socket %d: send: %v", k, err)
					}
					continue
				}
				sizes[i] = int16(n)
				if n >= stamp.SenderPacketLen {
					ssids[i] = binary.BigEndian.Uint16(buf[14:16])
					sent[k].long++
				} else {
					sent[k].short++
				}
			}
		}()
	}
	senders.Wait()
	sendTime := time.Since(begin)
	var short, long int
	for _, s := range sent {
		short += s.short
		long += s.long
	}

	// The reflector reads its socket in order: once a probe sent after the
	// flood is answered, every datagram of the flood that the kernel
	// queued has been read and decided. The probe may itself be dropped
	// while the queue is still full, so it is retried.
	sentinel := client(t, "udp4", 0)
	sentinels := 0
	floodCond(t, 30*time.Second, func() string { return "the reflector to answer after the flood: " + r.counts().String() }, func() bool {
		sentinels++
		_, _, _, ok := exchange(t, sentinel, dst, senderPacket(t, uint32(sentinels), 0xffff, 44), silenceWait)
		return ok
	})
	floodCond(t, 10*time.Second, func() string { return "received = reflected + bad_data + throttled: " + r.counts().String() },
		func() bool { return r.counts().balanced() })
	floodOver.Store(true)
	readers.Wait()
	c := r.counts()

	var got int
	for _, rs := range replies {
		got += len(rs)
	}
	t.Logf("flood: sent %d datagrams (%d under 44 octets, %d of 44 or more) from %d sockets in %v (%.0f/s)",
		short+long, short, long, floodSockets, sendTime.Round(time.Millisecond), float64(short+long)/sendTime.Seconds())
	t.Logf("reflector: %s; kernel drops %.0f (sent + %d sentinels - received; socket drop counter %d); %d replies read back",
		c, float64(short+long+sentinels)-c.received, sentinels, procnet.PortDrops(dst.Port()), got)

	for k, err := range readErrs {
		if err != nil {
			t.Errorf("socket %d: reading replies: %v", k, err)
		}
	}
	if !c.balanced() {
		t.Errorf("unaccounted datagrams: %s", c)
	}
	if c.throttled != 0 {
		t.Errorf("throttled %.0f without any rate limit", c.throttled)
	}
	if c.received > float64(short+long+sentinels) {
		t.Errorf("received %.0f, more than the %d datagrams sent", c.received, short+long+sentinels)
	}
	if c.badData > float64(short) {
		t.Errorf("bad_data %.0f, more than the %d datagrams under 44 octets sent (a datagram of 44 octets or more is a valid Session-Sender packet)", c.badData, short)
	}
	if c.reflected > float64(long+sentinels) {
		t.Errorf("reflected %.0f, more than the %d datagrams of 44 octets or more sent", c.reflected, long+sentinels)
	}
	if float64(got) > c.reflected {
		t.Errorf("%d replies read back, more than the %.0f reflected", got, c.reflected)
	}
	if c.reflected == 0 || got == 0 {
		t.Errorf("nothing reflected (%.0f) or read back (%d): the flood tested nothing", c.reflected, got)
	}

	// No amplification, no reply to anything not asked.
	answered := make([]bool, floodDatagrams)
	bad := 0
	for k, rs := range replies {
		for _, fr := range rs {
			var why string
			switch i := int(fr.idx); {
			case fr.n < stamp.ReflectorPacketLen:
				why = "a reply shorter than 44 octets"
			case i < k*per || i >= (k+1)*per:
				why = fmt.Sprintf("Sender Sequence Number %d was not sent from this socket", fr.idx)
			case sizes[i] < stamp.SenderPacketLen:
				why = fmt.Sprintf("datagram %d had %d octets and must not be answered", i, sizes[i])
			case fr.n != int(sizes[i]):
				why = fmt.Sprintf("%d octets in answer to datagram %d of %d octets", fr.n, i, sizes[i])
			case fr.ssid != ssids[i]:
				why = fmt.Sprintf("SSID %#04x in answer to datagram %d with SSID %#04x", fr.ssid, i, ssids[i])
			case fr.from != dst:
				why = fmt.Sprintf("reply from %v, want %v", fr.from, dst)
			case answered[i]:
				why = fmt.Sprintf("datagram %d answered twice", i)
			}
			if fr.idx < floodDatagrams {
				answered[fr.idx] = true
			}
			if why != "" {
				if bad++; bad <= 10 {
					t.Errorf("socket %d: %s", k, why)
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d bad replies in all", bad)
	}
}

// TestIsolationPerSourceLimit runs a reflector limited to 200 pps per
// source. Source A (127.0.0.2) floods valid probes — at least 20,000, and
// on until B is done — while source B (127.0.0.3) sends 100 probes at
// 50/s, one every 20ms, each waiting up to 2s for its reply. A must be
// throttled and B must lose nothing. The rate the reflector held towards A
// is logged.
//
// Two floods: "paced" sends 10,000 pps, fifty times the limit but well
// within what the reflector reads, so it tests the limiter itself;
// "flat-out" sends as fast as one socket can, which can outrun the
// reflector's reads: the kernel then drops datagrams of every source alike
// when the socket's receive queue is full, before the per-source limit
// sees them, and B loses probes (the failure message says how many
// datagrams the kernel dropped at the reflector's socket).
func TestIsolationPerSourceLimit(t *testing.T) {
	if testing.Short() {
		// Under -race -short the reflector reads several times slower and
		// even the paced flood overflows its socket.
		t.Skip("floods a reflector for seconds; not in -short mode")
	}
	t.Run("paced", func(t *testing.T) { isolation(t, 10_000) })
	t.Run("flat-out", func(t *testing.T) {
		if !udpsock.BatchedIO {
			t.Skip("the portable socket layer reads one datagram per system call, as fast as the flood writes them: its queue fills and the kernel drops B's probes too")
		}
		isolation(t, 0)
	})
}

// isolation is TestIsolationPerSourceLimit with A sending pps probes a
// second, or as fast as it can when pps is 0.
func isolation(t *testing.T, pps int) {
	const (
		perSource = 200
		floodMin  = 20_000
		bProbes   = 100
		bEvery    = 20 * time.Millisecond
		bWait     = 2 * time.Second // B's reply deadline: loss, not delay
		// maxCatchUp bounds the burst a paced A sends after falling
		// behind, well below what the reflector's receive queue holds.
		maxCatchUp = 64
		// B gives up after this many lost probes: the verdict is known,
		// and each loss costs bWait.
		bMaxLost = 5
	)
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}, MaxPPSPerSource: perSource})
	dst := r.Addrs()[0]
	listen := func(addr string) *udpsock.Conn {
		c, err := udpsock.Listen("udp4", netip.MustParseAddrPort(addr), udpsock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := listen("127.0.0.2:0"), listen("127.0.0.3:0")

	// A's replies: counted, with the times of the first and the last.
	var aReplies int
	var aFirst, aLast time.Time
	var bDone atomic.Bool
	aRead := make(chan struct{})
	go func() {
		defer close(aRead)
		buf := make([]byte, 2048)
		for {
			a.SetReadDeadline(time.Now().Add(floodReadIdle))
			_, err := a.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if bDone.Load() {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			now := time.Now()
			if aReplies == 0 {
				aFirst = now
			}
			aLast = now
			aReplies++
		}
	}()
	var aSent, aErrs int
	aFlood := make(chan struct{})
	go func() {
		defer close(aFlood)
		probe := senderPacket(t, 0, 0xa, 44)
		begin := time.Now()
		for seq := uint32(0); aSent < floodMin || !bDone.Load(); {
			n := 1
			if pps > 0 {
				// Pacing, not waiting for luck: send what is due.
				due := int(time.Since(begin).Seconds()*float64(pps)) - int(seq)
				if due <= 0 {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				n = min(due, maxCatchUp)
			}
			for range n {
				binary.BigEndian.PutUint32(probe, seq)
				seq++
				if _, err := a.WriteToUDPAddrPort(probe, dst); err != nil {
					aErrs++
					continue
				}
				aSent++
			}
		}
	}()

	// B: one probe every 20ms, each waiting for its own reply.
	var bLost []uint32
	tick := time.NewTicker(bEvery)
	buf := make([]byte, 2048)
	dropsBefore := procnet.PortDrops(dst.Port())
	bBegin := time.Now()
	bSent := 0
	for seq := uint32(0); seq < bProbes && len(bLost) < bMaxLost; seq++ {
		<-tick.C
		if _, err := b.WriteToUDPAddrPort(senderPacket(t, seq, 0xb, 44), dst); err != nil {
			t.Fatalf("B: send: %v", err)
		}
		bSent++
		b.SetReadDeadline(time.Now().Add(bWait))
		for {
			n, err := b.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				bLost = append(bLost, seq)
				break
			}
			if err != nil {
				t.Fatalf("B: read: %v", err)
			}
			var rp stamp.ReflectorPacket
			if rp.UnmarshalBinary(buf[:n]) == nil && rp.SenderSequence == seq {
				break
			}
			// A late reply to an earlier probe of B: keep waiting.
		}
	}
	tick.Stop()
	bTime := time.Since(bBegin)
	dropsDuringB := procnet.PortDrops(dst.Port()) - dropsBefore
	bDone.Store(true)
	<-aFlood
	<-aRead
	floodCond(t, 10*time.Second, func() string { return "received = reflected + bad_data + throttled: " + r.counts().String() },
		func() bool { return r.counts().balanced() })
	c := r.counts()

	span := aLast.Sub(aFirst)
	var held, steady float64
	if aReplies > perSource && span > 0 {
		held = float64(aReplies-1) / span.Seconds()
		steady = float64(aReplies-perSource) / span.Seconds() // without the initial burst of 200
	}
	t.Logf("A (127.0.0.2) sent %d probes (%d send errors), got %d replies over %v: the reflector held %.0f replies/s (%.0f/s after the initial burst of %d) against a limit of %d pps per source",
		aSent, aErrs, aReplies, span.Round(time.Millisecond), held, steady, perSource, perSource)
	t.Logf("B (127.0.0.3) sent %d probes at one per %v in %v, lost %d %v (it stops after %d losses)",
		bSent, bEvery, bTime.Round(time.Millisecond), len(bLost), bLost, bMaxLost)
	t.Logf("reflector: %s; kernel drops %.0f (socket drop counter %d, %d while B was probing)",
		c, float64(aSent+bSent)-c.received, procnet.PortDrops(dst.Port()), dropsDuringB)

	if c.throttled == 0 {
		t.Errorf("A sent %d probes and none was throttled by a %d pps limit", aSent, perSource)
	}
	if len(bLost) != 0 {
		t.Errorf("B lost %d probes (%v; it stops after %d) while A was throttled; the kernel dropped %d datagrams at the reflector's socket meanwhile (its receive queue was full, so the per-source limit never saw them)",
			len(bLost), bLost, bMaxLost, dropsDuringB)
	}
	if aReplies >= aSent {
		t.Errorf("A got %d replies to %d probes: not limited", aReplies, aSent)
	}
	if !c.balanced() {
		t.Errorf("unaccounted datagrams: %s", c)
	}
}
