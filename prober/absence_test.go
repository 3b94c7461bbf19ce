package prober

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// Series that only some replies can feed, by what they need.
const (
	seriesDwell       = "llama_probe_reflector_dwell_seconds"
	seriesHops        = "llama_probe_forward_hops"
	seriesHopsChanges = "llama_probe_forward_hops_changes_total"
	seriesRemarkedFwd = `llama_probe_dscp_remarked_total{direction="forward"}`
	seriesRemarkedBwd = `llama_probe_dscp_remarked_total{direction="backward"}`
)

var optionalSeries = []string{seriesDwell, seriesHops, seriesHopsChanges, seriesRemarkedFwd, seriesRemarkedBwd}

// TestUnknowableSeriesAbsent probes with every protocol, and with stamp
// against reflectors that return less than ours (no Class of Service TLV,
// no Sender TTL), and checks that each session exposes exactly the
// optional series that its replies fed: what the prober cannot know is
// absent, never 0.
func TestUnknowableSeriesAbsent(t *testing.T) {
	ours := startReflector(t, "127.0.0.1:0")
	noTLV := scriptedReflector(t, twampStyle{})             // whole replies, Class of Service TLV not understood
	short := scriptedReflector(t, twampStyle{replyLen: 38}) // no Sender TTL, no TLV
	withBwd := []string{seriesDwell, seriesHops, seriesHopsChanges, seriesRemarkedFwd, seriesRemarkedBwd}
	if !udpsock.ControlMessages {
		withBwd = withBwd[:4] // the portable socket layer reads no reply DSCP
	}
	cases := []struct {
		name   string
		prober string
		size   int // packet_size; 0: the protocol's default
		target string
		want   []string
	}{
		{"stamp, our reflector, packet_size 64", config.ProberSTAMP, 64, ours.String(), withBwd},
		{"stamp, our reflector, packet_size 44: no room for the TLV", config.ProberSTAMP, 44, ours.String(),
			[]string{seriesDwell, seriesHops, seriesHopsChanges}},
		{"stamp, reflector without the TLV", config.ProberSTAMP, 64, noTLV.String(),
			[]string{seriesDwell, seriesHops, seriesHopsChanges}},
		{"stamp, reflector without Sender TTL or TLV", config.ProberSTAMP, 64, short.String(), []string{seriesDwell}},
		{"llama, our reflector", config.ProberLLAMA, 0, ours.String(), nil},
		{"tcp", config.ProberTCP, 0, tcpListener(t).String(), nil},
		{"icmp", config.ProberICMP, 0, "127.0.0.1", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := decodeModule(t, tc.prober)
			m.Interval, m.Timeout, m.Window = 10*time.Millisecond, time.Second, 10*time.Second
			if tc.size != 0 {
				m.PacketSize = tc.size
			}
			if tc.prober == config.ProberTCP {
				m.PacketSize = 0
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			s, _, err := mgr.Get(context.Background(), tc.prober, m, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			var sn Snapshot
			waitFor(t, 30*time.Second, "20 answered probes", func() bool {
				sn = s.Snapshot()
				return sn.Received >= 20
			})
			got := optionalExposed(t, s, sn)
			if !slices.Equal(got, tc.want) {
				t.Errorf("optional series %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOptionalSeriesFollowProberSpec feeds every protocol's session a
// reply that carries everything (T2 and T3, Sender TTL, the Class of
// Service TLV): a protocol whose spec says its replies cannot carry a part
// still exposes none of the series it feeds.
func TestOptionalSeriesFollowProberSpec(t *testing.T) {
	for name, p := range Probers {
		t.Run(name, func(t *testing.T) {
			m := decodeModule(t, name)
			dst := netip.MustParseAddrPort("198.18.0.2:862")
			s := newSession(name, m, dst.String(), "198.18.0.2", 862, dst, 0)
			s.pool = &pool{proto: p, ttl: [2]int{64, 64}}
			for seq := range uint32(2) {
				s.recordSend(int64(seq) * 10 * ms)
				s.onReply(&reply{seq: seq, reflSeq: seq, t4: int64(seq)*10*ms + ms, stamps: StampsUsable, dwell: 1000,
					senderTTL: 60, dscp: 10, dscp2: 10})
			}
			var want []string
			if p.ReflectorTimestamps {
				want = append(want, seriesDwell)
			}
			if p.SenderTTL {
				want = append(want, seriesHops, seriesHopsChanges)
			}
			if p.ClassOfService {
				want = append(want, seriesRemarkedFwd, seriesRemarkedBwd)
			}
			if got := optionalExposed(t, s, s.snapshot(2*time.Second.Nanoseconds())); !slices.Equal(got, want) {
				t.Errorf("optional series %q, want %q (spec %+v)", got, want, p)
			}
		})
	}
}

// optionalExposed returns which of optionalSeries the session's collector
// exposes, in that order.
func optionalExposed(t *testing.T, s *Session, sn Snapshot) []string {
	t.Helper()
	names := exposed(t, s, sn)
	var got []string
	for _, n := range optionalSeries {
		switch n {
		case seriesRemarkedFwd, seriesRemarkedBwd:
			dir := n[len(`llama_probe_dscp_remarked_total{direction="`) : len(n)-2]
			if mf := names["llama_probe_dscp_remarked_total"]; mf != nil {
				for _, mt := range mf.Metric {
					if mt.Label[0].GetValue() == dir {
						got = append(got, n)
					}
				}
			}
		default:
			if names[n] != nil {
				got = append(got, n)
			}
		}
	}
	return got
}

// tcpListener accepts and closes TCP connections on a loopback port until
// the test ends.
func tcpListener(t *testing.T) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				c.Close()
			}
		}
	}()
	return l.Addr().(*net.TCPAddr)
}
