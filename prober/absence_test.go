package prober

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
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
	ours64 := []string{seriesDwell, seriesHops, seriesHopsChanges, seriesRemarkedFwd, seriesRemarkedBwd}
	ours44 := []string{seriesDwell, seriesHops, seriesHopsChanges}
	if !udpsock.ControlMessages {
		// The portable socket layer reads no TTL and no DSCP, at either
		// end: our reflector then returns no Sender TTL (255) and no
		// received DSCP, and the prober reads no reply DSCP.
		ours64, ours44 = []string{seriesDwell}, []string{seriesDwell}
	}
	cases := []struct {
		name   string
		prober string
		size   int // packet_size; 0: the protocol's default
		target string
		want   []string
	}{
		{"stamp, our reflector, packet_size 64", config.ProberSTAMP, 64, ours.String(), ours64},
		{"stamp, our reflector, packet_size 44: no room for the TLV", config.ProberSTAMP, 44, ours.String(), ours44},
		{"stamp, reflector without the TLV", config.ProberSTAMP, 64, noTLV.String(),
			[]string{seriesDwell, seriesHops, seriesHopsChanges}},
		{"stamp, reflector without Sender TTL or TLV", config.ProberSTAMP, 64, short.String(), []string{seriesDwell}},
		{"llama, our reflector", config.ProberLLAMA, 0, ours.String(), nil},
		{"tcp", config.ProberTCP, 0, tcpListener(t).String(), nil},
		{"icmp", config.ProberICMP, 0, "127.0.0.1", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prober == config.ProberICMP && !udpsock.ControlMessages {
				t.Skip("the icmp prober needs the Linux socket layer, which this build (llama_portable) does not use")
			}
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
			testlab.WaitFor(t, 30*time.Second, "20 answered probes", func() bool {
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
			s := newSession(name, m, resolvedTarget{name: dst.String(), host: "198.18.0.2", port: 862, dst: dst}, 0)
			s.pool = &pool{proto: p, ttl: [2]int{64, 64}}
			for seq := range uint32(2) {
				s.recordSend(int64(seq) * 10 * ms)
				s.onReply(&timedReply{seq: seq, reflSeq: seq, t4: int64(seq)*10*ms + ms, stamps: StampsUsable, dwell: 1000,
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

// TestUnusableReflectorTimestampsCounted probes reflectors whose T2 and T3
// cannot be used (swapped, as Domos sends them; T2 zero): no dwell is
// subtracted, and every reply says so in
// llama_probe_reflector_timestamps_invalid_total and on the debug page,
// while the dwell series stays absent. Against our reflector the counter
// is 0, and a llama module has none.
func TestUnusableReflectorTimestampsCounted(t *testing.T) {
	const held = 3 * time.Millisecond
	ours := startReflector(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name    string
		prober  string
		target  string
		invalid bool // every reply's T2/T3 are unusable
	}{
		{"T3 before T2", config.ProberSTAMP, scriptedReflector(t, twampStyle{swapT2T3: true, dwell: held}).String(), true},
		{"T2 zero", config.ProberSTAMP, scriptedReflector(t, twampStyle{zeroT2: true, dwell: held}).String(), true},
		{"our reflector", config.ProberSTAMP, ours.String(), false},
		{"llama", config.ProberLLAMA, ours.String(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prober == config.ProberICMP && !udpsock.ControlMessages {
				t.Skip("the icmp prober needs the Linux socket layer, which this build (llama_portable) does not use")
			}
			m := decodeModule(t, tc.prober)
			m.Interval, m.Timeout, m.Window = 10*time.Millisecond, time.Second, 10*time.Second
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			s, _, err := mgr.Get(context.Background(), "m", m, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			var sn Snapshot
			testlab.WaitFor(t, 30*time.Second, "20 answered probes in the window", func() bool {
				sn = s.Snapshot()
				return sn.RTTCount >= 20
			})
			names := exposed(t, s, sn)
			mf := names["llama_probe_reflector_timestamps_invalid_total"]
			switch {
			case tc.prober != config.ProberSTAMP:
				if mf != nil {
					t.Fatalf("a %s module exposes llama_probe_reflector_timestamps_invalid_total", tc.prober)
				}
				return
			case mf == nil:
				t.Fatal("llama_probe_reflector_timestamps_invalid_total is missing")
			}
			got, want := uint64(mf.Metric[0].GetCounter().GetValue()), uint64(0)
			if tc.invalid {
				want = sn.Received
			}
			if got != want || sn.TimestampsInvalid != got {
				t.Errorf("timestamps invalid %d (snapshot %d) after %d replies, want %d", got, sn.TimestampsInvalid, sn.Received, want)
			}
			if (names[seriesDwell] != nil) == tc.invalid {
				t.Errorf("dwell series exposed: %v, want %v", names[seriesDwell] != nil, !tc.invalid)
			}
			if rttMin := time.Duration(sn.RTTMin * 1e9); tc.invalid && rttMin < held {
				t.Errorf("minimum RTT %v: a dwell was subtracted although the reflector held each probe %v", rttMin, held)
			}
			// Replies go on arriving: the page's count is at least the
			// snapshot's, and 0 stays 0.
			page := scrapeDebug(t, mgr, m, tc.target)
			mt := regexp.MustCompile(`timestamps_invalid=(\d+)`).FindStringSubmatch(page)
			if mt == nil {
				t.Fatalf("debug page lacks timestamps_invalid=:\n%s", page)
			}
			if n, _ := strconv.ParseUint(mt[1], 10, 64); n < got || !tc.invalid && n != 0 {
				t.Errorf("debug page: timestamps_invalid=%d, want %d or more (0 when valid)", n, got)
			}
		})
	}
}

// scrapeDebug returns the debug page of module m's session of target.
func scrapeDebug(t *testing.T, mgr *Manager, m *config.Module, target string) string {
	t.Helper()
	cfg := &config.Config{Modules: map[string]*config.Module{"m": m}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/probe?debug=true&module=m&target="+target, nil))
	if w.Code != http.StatusOK {
		t.Fatalf("debug page: status %d: %s", w.Code, w.Body)
	}
	return w.Body.String()
}
