package reflector

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/ipv4"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// sendTrain sends reqs, all but the last of the same size, as one UDP GSO
// buffer: on loopback it reaches a UDP_GRO socket as one buffer.
func sendTrain(t *testing.T, c *udpsock.Conn, dst netip.AddrPort, reqs [][]byte) {
	t.Helper()
	var buf []byte
	for _, r := range reqs {
		buf = append(buf, r...)
	}
	oob := udpsock.AppendSegmentSize(nil, len(reqs[0]))
	if _, _, err := c.WriteMsgUDPAddrPort(buf, oob, dst); err != nil {
		t.Fatal(err)
	}
}

// TestTrainsReflected sends runs of probes as one GSO buffer, which the
// reflector's UDP_GRO socket receives as one buffer, and checks that every
// probe is answered on its own, in order, with its own sequence numbers, a
// T3 and (authenticated) a valid HMAC.
func TestTrainsReflected(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name       string
		cfg        Config
		size, last int // octets of each probe, and of the last one
	}{
		{"equal", Config{}, 44, 44},
		{"shorter last", Config{}, 60, 48},
		{"authenticated", Config{AuthKey: key}, 112, 112},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ListenAddresses = []string{"127.0.0.1:0"}
			r, _ := start(t, tc.cfg)
			c := client(t, "udp4", 0)
			if !c.GSO() {
				t.Skip("the portable socket layer has no UDP GSO or GRO: no trains to send or receive")
			}
			if !r.conns[0].GRO() {
				t.Fatal("the kernel refused UDP_GRO on the reflector socket")
			}
			const n = 20
			var reqs [][]byte
			sent := make([]stamp.SenderPacket, n)
			for i := range n {
				size := tc.size
				if i == n-1 {
					size = tc.last
				}
				sent[i] = stamp.SenderPacket{Sequence: uint32(100 + i), Timestamp: stamp.NewTimestamp(time.Now()), SSID: 9}
				b := make([]byte, size)
				var err error
				if tc.cfg.AuthKey != nil {
					_, err = sent[i].MarshalAuthTo(b, key)
				} else {
					_, err = sent[i].MarshalTo(b)
				}
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, b)
			}
			sendTrain(t, c, r.Addrs()[0], reqs)
			buf, oob := make([]byte, 2048), make([]byte, udpsock.OOBSize)
			for i := range n {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				got, _, _, err := c.ReadMeta(buf, oob)
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if got != len(reqs[i]) {
					t.Fatalf("reply %d: %d octets for a %d-octet probe", i, got, len(reqs[i]))
				}
				var rp stamp.ReflectorPacket
				if tc.cfg.AuthKey != nil {
					err = rp.UnmarshalAuth(buf[:got], key)
				} else {
					err = rp.UnmarshalBinary(buf[:got])
				}
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if rp.SenderSequence != sent[i].Sequence || rp.Sequence != uint32(i) || rp.SenderTimestamp != sent[i].Timestamp {
					t.Fatalf("reply %d: sender seq %d, seq %d; want %d and %d (stateful)", i, rp.SenderSequence, rp.Sequence, sent[i].Sequence, i)
				}
				if t2, t3 := rp.ReceiveTimestamp.Time(), rp.Timestamp.Time(); t2.IsZero() || t3.Before(t2) {
					t.Fatalf("reply %d: T2 %v, T3 %v", i, t2, t3)
				}
			}
			eventually(t, "every probe counted", func() bool {
				return testutil.ToFloat64(r.m.received) == n && testutil.ToFloat64(r.m.reflected) == n
			})
		})
	}
}

// TestEmptyDatagramIsBadData: a zero-length datagram is one received,
// malformed packet, not nothing.
func TestEmptyDatagramIsBadData(t *testing.T) {
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}})
	c := client(t, "udp4", 0)
	if _, err := c.WriteToUDPAddrPort(nil, r.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bad data 1", func() bool {
		return testutil.ToFloat64(r.m.received) == 1 && testutil.ToFloat64(r.m.badData) == 1
	})
}

func TestReplyBatchTrains(t *testing.T) {
	c := client(t, "udp4", 0)
	a := netip.MustParseAddrPort("198.18.0.1:5000")
	b := netip.MustParseAddrPort("198.18.0.2:5000")
	if !c.GSO() {
		// A train would leave as one datagram: every reply must be a
		// message of its own.
		rb := newReplyBatch(c, discard)
		for range 3 {
			rb.add(make([]byte, 44), a, netip.Addr{}, 0, -1, true)
		}
		if rb.k != 3 || len(rb.msgs[0].OOB) != 0 {
			t.Fatalf("without GSO: %d messages, %d octets of control messages; want 3 and none", rb.k, len(rb.msgs[0].OOB))
		}
		t.Skip("the portable socket layer has no UDP GSO: replies are never merged into trains")
	}
	type reply struct {
		size  int
		to    netip.AddrPort
		tos   int
		stamp bool
	}
	same := func(n, size int) []reply {
		rs := make([]reply, n)
		for i := range rs {
			rs[i] = reply{size, a, -1, true}
		}
		return rs
	}
	for _, tc := range []struct {
		name    string
		replies []reply
		trains  []int // replies per message
	}{
		{"one destination", same(3, 44), []int{3}},
		{"two destinations", []reply{{44, a, -1, true}, {44, b, -1, true}, {44, a, -1, true}}, []int{1, 1, 1}},
		{"TOS differs", []reply{{44, a, -1, true}, {44, a, 0xb8, true}}, []int{1, 1}},
		{"legacy and STAMP", []reply{{44, a, -1, true}, {44, a, -1, false}}, []int{1, 1}},
		{"shorter reply ends a train", []reply{{48, a, -1, true}, {48, a, -1, true}, {44, a, -1, true}, {44, a, -1, true}}, []int{3, 1}},
		{"longer reply starts a train", []reply{{44, a, -1, true}, {48, a, -1, true}}, []int{1, 1}},
		{"64 per train", same(65, 44), []int{64, 1}},
		{"no GSO past one MTU", same(2, 1500), []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := newReplyBatch(c, discard)
			for i, r := range tc.replies {
				if !rb.add(make([]byte, r.size), r.to, netip.Addr{}, 0, r.tos, r.stamp) {
					t.Fatalf("reply %d refused", i)
				}
			}
			if rb.k != len(tc.trains) {
				t.Fatalf("%d messages, want %d", rb.k, len(tc.trains))
			}
			for i, want := range tc.trains {
				tr, m := rb.trains[i], rb.msgs[i]
				if tr.n != want {
					t.Errorf("message %d: %d replies, want %d", i, tr.n, want)
				}
				if hasSegmentSize(m.OOB) != (want > 1) {
					t.Errorf("message %d of %d replies: UDP_SEGMENT %v", i, want, hasSegmentSize(m.OOB))
				}
			}
		})
	}
	t.Run("full batch", func(t *testing.T) {
		rb := newReplyBatch(c, discard)
		for i := range batchSize {
			to := netip.AddrPortFrom(a.Addr(), uint16(1000+i))
			if !rb.add(make([]byte, 44), to, netip.Addr{}, 0, -1, true) {
				t.Fatalf("reply %d refused", i)
			}
		}
		if rb.add(make([]byte, 44), b, netip.Addr{}, 0, -1, true) {
			t.Fatal("a full batch took one more message")
		}
	})
}

// fakeConn records datagrams written and refuses what refuse says.
type fakeConn struct {
	refuse func(m ipv4.Message) error
	got    [][]byte
}

func (f *fakeConn) ReadBatch([]ipv4.Message, int) (int, error) { return 0, errors.New("not used") }

func (f *fakeConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for i, m := range ms {
		if err := f.refuse(m); err != nil {
			if i == 0 {
				return -1, err
			}
			return i, nil
		}
		f.got = append(f.got, append([]byte(nil), m.Buffers[0]...))
	}
	return len(ms), nil
}

// TestRefusedTrainsSentOneByOne: a train the kernel refuses goes out one
// datagram at a time; EIO (a device that cannot checksum GSO buffers)
// turns GSO off for the socket, other errors do not; a refused single
// reply is counted and the rest of the batch still leaves.
func TestRefusedTrainsSentOneByOne(t *testing.T) {
	c := client(t, "udp4", 0)
	a := netip.MustParseAddrPort("198.18.0.1:5000")
	bad := netip.MustParseAddrPort("198.18.0.9:5000")
	for _, tc := range []struct {
		name    string
		errno   syscall.Errno
		gsoKept bool
	}{
		{"EIO", syscall.EIO, false},
		{"EINVAL", syscall.EINVAL, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeConn{refuse: func(m ipv4.Message) error {
				if hasSegmentSize(m.OOB) {
					return tc.errno
				}
				if m.Addr.String() == bad.String() {
					return syscall.EPERM
				}
				return nil
			}}
			rb := newReplyBatch(c, discard)
			for i := range 5 {
				rb.add([]byte{byte(i), 0, 0, 0}, a, netip.Addr{}, 0, -1, true)
			}
			rb.add([]byte{9, 0, 0, 0}, bad, netip.Addr{}, 0, -1, true)
			rb.add([]byte{5, 0, 0, 0}, netip.MustParseAddrPort("198.18.0.3:1"), netip.Addr{}, 0, -1, true)
			sent, failed := rb.flush(fc)
			if sent != 6 || failed != 1 {
				t.Fatalf("sent %d, failed %d; want 6 and 1", sent, failed)
			}
			for i, g := range fc.got {
				if len(g) != 4 || g[0] != byte(i) {
					t.Fatalf("datagram %d is %v, want [%d 0 0 0]", i, g, i)
				}
			}
			// Without GSO (the portable socket layer) the replies
			// leave one by one from the start: no train to refuse.
			if want := tc.gsoKept && c.GSO(); rb.gso != want || rb.k != 0 {
				t.Fatalf("gso %v, %d messages left; want %v and 0", rb.gso, rb.k, want)
			}
		})
	}
}
