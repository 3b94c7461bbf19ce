package reflector

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/legacy"
	"github.com/llama-exporter/llama_exporter/stamp"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func start(t *testing.T, cfg Config) (*Reflector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(cfg, reg, discard)
	if err != nil {
		t.Fatal(err)
	}
	r.Serve()
	t.Cleanup(func() { r.Close() })
	return r, reg
}

// client is a probe socket that reads the reply's TOS and source address.
func client(t *testing.T, network string, tos int) *udpsock.Conn {
	t.Helper()
	laddr := netip.MustParseAddrPort("127.0.0.1:0")
	if network == "udp6" {
		laddr = netip.MustParseAddrPort("[::1]:0")
	}
	c, err := udpsock.Listen(network, laddr, udpsock.Options{RecvMeta: true, TOS: tos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// How long exchange waits: for a reply that must come, long enough that a
// stalled test machine does not fail the test; for one that must not, or
// may not (a rate limit), long enough for any loopback reply.
const (
	replyWait   = 5 * time.Second
	silenceWait = 500 * time.Millisecond
)

// exchange sends req to dst and returns the reply, its source and its
// control messages, or ok=false if none came within wait.
func exchange(t *testing.T, c *udpsock.Conn, dst netip.AddrPort, req []byte, wait time.Duration) (reply []byte, from netip.AddrPort, m udpsock.Meta, ok bool) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(req, dst); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf, oob := make([]byte, 2048), make([]byte, udpsock.OOBSize)
	n, from, m, err := c.ReadMeta(buf, oob)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, from, m, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], from, m, true
}

// eventually waits up to 5 s for cond, polling every 5 ms.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func senderPacket(t *testing.T, seq uint32, ssid uint16, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	for i := stamp.SenderPacketLen; i < size; i++ {
		b[i] = byte(i) // padding / TLVs the reflector must echo
	}
	p := stamp.SenderPacket{Sequence: seq, Timestamp: stamp.NewTimestamp(time.Now()), ErrorEstimate: stamp.NewErrorEstimate(false, time.Millisecond), SSID: ssid}
	if _, err := p.MarshalTo(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReflectsSTAMP(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			listen := "127.0.0.1:0"
			if network == "udp6" {
				listen = "[::1]:0"
			}
			r, reg := start(t, Config{ListenAddresses: []string{listen}, Stateless: true})
			dst := r.Addrs()[0]
			c := client(t, network, 46<<2) // EF
			req := senderPacket(t, 7, 0xbeef, 100)
			before := time.Now()
			reply, from, meta, ok := exchange(t, c, dst, req, replyWait)
			if !ok {
				t.Fatal("no reply")
			}
			if len(reply) != len(req) {
				t.Fatalf("reply %d octets for a %d-octet request", len(reply), len(req))
			}
			var rp stamp.ReflectorPacket
			if err := rp.UnmarshalBinary(reply); err != nil {
				t.Fatal(err)
			}
			var sp stamp.SenderPacket
			sp.UnmarshalBinary(req)
			if rp.Sequence != 7 || rp.SenderSequence != 7 || rp.SSID != 0xbeef || rp.SenderTimestamp != sp.Timestamp ||
				rp.SenderErrorEstimate != sp.ErrorEstimate {
				t.Fatalf("reply fields %+v do not echo the request %+v", rp, sp)
			}
			// The portable socket layer reads no TTL, which the reflector
			// then reports as 255, nor the reply's DSCP.
			wantTTL := 64 // loopback default TTL / hop limit
			if !udpsock.ControlMessages {
				wantTTL = 255
			}
			if int(rp.SenderTTL) != wantTTL {
				t.Errorf("Sender TTL %d, want %d", rp.SenderTTL, wantTTL)
			}
			t2, t3 := rp.ReceiveTimestamp.Time(), rp.Timestamp.Time()
			if t2.Before(before.Add(-time.Second)) || t3.Before(t2) || t3.Sub(t2) > time.Second {
				t.Errorf("T2 %v, T3 %v: want T2 <= T3 shortly after %v", t2, t3, before)
			}
			for i := stamp.ReflectorPacketLen; i < len(reply); i++ {
				if reply[i] != byte(i) {
					t.Fatalf("octet %d after the base packet not echoed", i)
				}
			}
			if udpsock.ControlMessages && meta.TOS>>2 != 46 {
				t.Errorf("reply DSCP %d, want the probe's 46", meta.TOS>>2)
			}
			if from != dst {
				t.Errorf("reply from %v, want %v", from, dst)
			}
			// The counter moves after the send returns, maybe after the
			// reply arrived.
			eventually(t, "reflected_total 1", func() bool { return testutil.ToFloat64(r.m.reflected) == 1 })
			if n, err := testutil.GatherAndCount(reg); err != nil || n != 7 {
				t.Errorf("%d reflector series, %v; want 7", n, err)
			}
		})
	}
}

func TestStatefulNumbersEachSession(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	a, b := client(t, "udp4", 0), client(t, "udp4", 0)
	for _, tc := range []struct {
		c         *udpsock.Conn
		seq       uint32
		ssid      uint16
		reflected uint32
	}{
		{a, 7, 1, 0}, {a, 9, 1, 1}, {a, 100, 1, 2}, // one session: counted
		{a, 8, 2, 0}, // another SSID: another session
		{b, 7, 1, 0}, // another source port: another session
		{a, 101, 1, 3},
	} {
		reply, _, _, ok := exchange(t, tc.c, r.Addrs()[0], senderPacket(t, tc.seq, tc.ssid, 44), replyWait)
		if !ok {
			t.Fatal("no reply")
		}
		var rp stamp.ReflectorPacket
		rp.UnmarshalBinary(reply)
		if rp.Sequence != tc.reflected || rp.SenderSequence != tc.seq {
			t.Errorf("probe %d SSID %d: reflector sequence %d (sender %d), want %d", tc.seq, tc.ssid, rp.Sequence, rp.SenderSequence, tc.reflected)
		}
	}
	if n := testutil.ToFloat64(r.m.sessions); n != 3 {
		t.Errorf("llama_reflector_sessions %v, want 3", n)
	}
	r.Close()
	if n := testutil.ToFloat64(r.m.sessions); n != 0 {
		t.Errorf("llama_reflector_sessions %v after Close, want 0", n)
	}
}

// TestStatefulCountRestartsWithSender runs a TWAMP-Light sender (SSID 0,
// sequence numbers from 0) three times from one socket, as twampy does when
// it is started again on the same 5-tuple: each run must be counted from 0
// again, or the sender reads the earlier runs' replies as negative loss on
// the way out. A late duplicate of a run's first probe (its T1 is older
// than the last probe's) must not restart the count.
func TestStatefulCountRestartsWithSender(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	c := client(t, "udp4", 0)
	var first []byte // the last run's probe 0
	send := func(name string, seq uint32, want uint32) {
		t.Helper()
		req := senderPacket(t, seq, 0, 44)
		if seq == 0 {
			first = req
		}
		if seq == ^uint32(0) {
			req = first // a duplicate of probe 0, arriving late
		}
		reply, _, _, ok := exchange(t, c, r.Addrs()[0], req, replyWait)
		if !ok {
			t.Fatalf("%s: no reply to probe %d", name, seq)
		}
		var rp stamp.ReflectorPacket
		rp.UnmarshalBinary(reply)
		if rp.Sequence != want {
			t.Errorf("%s: probe %d answered with reflector sequence %d, want %d", name, rp.SenderSequence, rp.Sequence, want)
		}
	}
	for i, seq := range []uint32{0, 1, 2, 3, 4} {
		send("first run", seq, uint32(i))
	}
	for i, seq := range []uint32{0, 1, 2} {
		send("second run", seq, uint32(i))
	}
	// Probe 1 lost on the way out, probe 0 duplicated: the count says so.
	for i, seq := range []uint32{0, 2, ^uint32(0), 3} {
		send("third run", seq, uint32(i))
	}
	if n := testutil.ToFloat64(r.m.sessions); n != 1 {
		t.Errorf("llama_reflector_sessions %v, want 1: a restarted sender is the same session", n)
	}
}

func TestSessionTableBounded(t *testing.T) {
	count := new(atomic.Int64)
	st := newSessionTable(count)
	base := netip.MustParseAddr("198.18.0.1")
	// The bound is over all tables: fill it from two.
	other := newSessionTable(count)
	for i := range maxSessions {
		k := sessionKey{from: netip.AddrPortFrom(base, uint16(i)), to: base, ssid: uint16(i >> 16)}
		tab := st
		if i%4 == 0 {
			tab = other
		}
		if _, ok := tab.next(k, 0, 0, 1000); !ok {
			t.Fatalf("session %d refused below the bound", i)
		}
	}
	extra := sessionKey{from: netip.MustParseAddrPort("198.18.0.2:1"), to: base}
	if _, ok := st.next(extra, 0, 0, 1000); ok {
		t.Fatal("table grew past its bound")
	}
	// A full table is not scanned again for every new session.
	before := st.sweeps
	for i := range 1000 {
		st.next(sessionKey{from: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.3"), uint16(i)), to: base}, 0, 0, 1001)
	}
	if st.sweeps-before != 1 {
		t.Fatalf("%d sweeps of a full table within one second, want 1", st.sweeps-before)
	}
	if n, ok := st.next(extra, 0, 0, 1000+sessionIdle); !ok || n != 0 || len(st.m) != 1 {
		t.Fatalf("after the idle time: ok %v, n %d, %d sessions; want the idle ones evicted", ok, n, len(st.m))
	}
	// The other table forgets its idle sessions at its own next sweep.
	other.next(sessionKey{from: netip.MustParseAddrPort("198.18.0.2:2"), to: base}, 0, 0, 1000+sessionIdle)
	if n := count.Load(); n != 2 {
		t.Fatalf("count %d after eviction, want 2", n)
	}
}

func TestWildcardRepliesFromProbedAddress(t *testing.T) {
	if !udpsock.ControlMessages {
		t.Skip("the portable socket layer has no IP_PKTINFO: a wildcard socket replies from the address the route picks")
	}
	r, _ := start(t, Config{ListenAddresses: []string{":0"}, Sockets: 3})
	port := r.Addrs()[0].Port()
	if len(r.conns) != 6 || len(r.Addrs()) != 2 || r.Addrs()[1].Port() != port {
		t.Fatalf("%d sockets on %v: want 3 per family sharing one port", len(r.conns), r.Addrs())
	}
	c := client(t, "udp4", 0)
	for _, a := range []string{"127.0.0.1", "127.0.0.2", "127.1.2.3"} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(a), port)
		_, from, _, ok := exchange(t, c, dst, senderPacket(t, 1, 1, 44), replyWait)
		if !ok {
			t.Fatalf("no reply from %v", dst)
		}
		if from != dst {
			t.Errorf("probe to %v answered from %v", dst, from)
		}
	}
}

func TestBadDataCountedAndDropped(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	c := client(t, "udp4", 0)
	for _, n := range []int{0, 1, 43} {
		if _, _, _, ok := exchange(t, c, r.Addrs()[0], make([]byte, n), silenceWait); ok {
			t.Fatalf("%d-octet datagram answered", n)
		}
	}
	if got := testutil.ToFloat64(r.m.badData); got != 3 {
		t.Fatalf("bad_data_total %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.m.received); got != 3 {
		t.Fatalf("received_total %v, want 3", got)
	}
}

func TestRateLimitsDropAndCount(t *testing.T) {
	for name, cfg := range map[string]Config{
		"global":     {MaxPPS: 5},
		"per-source": {MaxPPSPerSource: 5},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.ListenAddresses = []string{"127.0.0.1:0"}
			r, _ := start(t, cfg)
			c := client(t, "udp4", 0)
			answered := 0
			for i := range 20 {
				if _, _, _, ok := exchange(t, c, r.Addrs()[0], senderPacket(t, uint32(i), 1, 44), silenceWait); ok {
					answered++
				}
			}
			// A burst of 5 tokens, plus at most a few refilled while the
			// unanswered exchanges wait 500ms each.
			if answered < 5 || answered >= 20 {
				t.Fatalf("%d of 20 answered with a limit of 5 pps", answered)
			}
			if got := testutil.ToFloat64(r.m.throttled); int(got) != 20-answered {
				t.Fatalf("throttled_total %v, want %d", got, 20-answered)
			}
		})
	}
}

func TestPrivilegedPortError(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may bind port 862")
	}
	_, err := New(Config{ListenAddresses: []string{"127.0.0.1:862"}}, nil, discard)
	if err == nil {
		t.Fatal("bound port 862 without privileges")
	}
}

func TestListenAddressErrors(t *testing.T) {
	for _, a := range []string{"nohost", "localhost:862", "127.0.0.1:99999"} {
		if _, err := New(Config{ListenAddresses: []string{a}}, nil, discard); err == nil {
			t.Errorf("listen address %q accepted", a)
		}
	}
	_ = net.IPv4len
}

func TestClassOfServiceTLV(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	c := client(t, "udp4", 10<<2) // probe leaves with AF11
	req := senderPacket(t, 1, 1, stamp.SenderPacketLen)
	var v [stamp.ClassOfServiceLen]byte
	(&stamp.ClassOfService{DSCP1: 46}).MarshalTo(v[:])
	req = stamp.AppendTLV(req, stamp.TLVFlagU, stamp.TLVClassOfService, v[:])
	req = stamp.AppendTLV(req, stamp.TLVFlagU, 200, []byte{1, 2, 3, 4}) // unknown to us
	reply, _, meta, ok := exchange(t, c, r.Addrs()[0], req, replyWait)
	if !ok {
		t.Fatal("no reply")
	}
	tlvs := reply[stamp.ReflectorPacketLen:]
	if unknown, ok := stamp.FindTLV(tlvs, 200); !ok || !unknown.Unrecognized() {
		t.Errorf("unknown TLV %+v: want it echoed with the U flag", unknown)
	}
	cosTLV, ok := stamp.FindTLV(tlvs, stamp.TLVClassOfService)
	if !udpsock.ControlMessages {
		// The portable socket layer neither reads the TOS received nor
		// sends DSCP1: the TLV goes back as it came, unrecognized, so
		// that the sender learns nothing false.
		if !ok || !cosTLV.Unrecognized() || !bytes.Equal(cosTLV.Value, v[:]) {
			t.Errorf("CoS TLV %+v: want it echoed unchanged with the U flag", cosTLV)
		}
		return
	}
	if !ok || cosTLV.Unrecognized() {
		t.Fatalf("CoS TLV missing or still flagged unrecognized: %+v", cosTLV)
	}
	var cos stamp.ClassOfService
	if err := cos.UnmarshalBinary(cosTLV.Value); err != nil {
		t.Fatal(err)
	}
	if cos.DSCP1 != 46 || cos.DSCP2 != 10 || cos.RP != stamp.CoSRPDefault {
		t.Errorf("CoS %+v: want DSCP1 46, DSCP2 10 (received), RP 0", cos)
	}
	if meta.TOS>>2 != 46 {
		t.Errorf("reply DSCP %d, want DSCP1 46", meta.TOS>>2)
	}
}

// TestLegacyLLAMAProbesEchoedByteForByte sends a Dropbox LLAMA collector's
// probe (protobuf, 1028 octets): it must come back unchanged, with the TOS
// the probe asks for, and count as reflected, not as bad data.
func TestLegacyLLAMAProbesEchoedByteForByte(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	c := client(t, "udp4", 0)
	p := legacy.Probe{Signature: [legacy.SignatureLen]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6}, TOS: 46 << 2, Sent: uint64(time.Now().UnixNano())}
	req, err := p.MarshalTo(nil, 1028)
	if err != nil {
		t.Fatal(err)
	}
	reply, _, meta, ok := exchange(t, c, r.Addrs()[0], req, replyWait)
	if !ok {
		t.Fatal("legacy probe not answered")
	}
	if !bytes.Equal(reply, req) {
		t.Fatalf("reply differs from the %d-octet probe", len(req))
	}
	if udpsock.ControlMessages && meta.TOS != 46<<2 { // unreadable on the portable socket layer
		t.Errorf("reply TOS %#x, want the probe's %#x", meta.TOS, 46<<2)
	}
	eventually(t, "reflected_total 1", func() bool { return testutil.ToFloat64(r.m.reflected) == 1 })
	if got := testutil.ToFloat64(r.m.badData); got != 0 {
		t.Errorf("bad_data_total %v", got)
	}
}
