package prober

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// twampStyle is how a scripted STAMP / TWAMP-Light session-reflector
// answers: the behaviours that real reflectors show and that the prober
// must accept.
type twampStyle struct {
	// replyLen is the octets of each reply: 38 is the RFC 5357 reflector
	// header through the Sender Error Estimate, without Sender TTL or
	// padding; 0 answers with as many octets as the probe had.
	replyLen int
	// ptp sets the Z bit and writes T2 and T3 in PTPv2 truncated format.
	ptp bool
	// zeroSSID answers with 0 in the SSID octets (RFC 5357 MBZ).
	zeroSSID bool
	// counted numbers replies per session (5-tuple), as a stateful
	// reflector does (RFC 8762 §4.3.1); otherwise the probe's sequence
	// number is copied.
	counted bool
	// dwell is how long the reflector holds each probe between T2 and T3.
	dwell time.Duration
	// swapT2T3 writes T2 where T3 goes and T3 where T2 goes (Domos);
	// zeroT2 writes 0 for T2 (a reflector that does not take it).
	swapT2T3, zeroT2 bool
}

// scriptedReflector answers STAMP probes on a loopback socket in style st
// until the test ends, and returns its address.
func scriptedReflector(t *testing.T, st twampStyle) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		counters := map[netip.AddrPort]uint32{}
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || n < stamp.SenderPacketLen {
				continue
			}
			reply := st.answer(buf[:n], time.Now(), counters, from)
			c.WriteToUDPAddrPort(reply, from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// answer builds the reply to probe, received at t2, in the style.
func (st twampStyle) answer(probe []byte, t2 time.Time, counters map[netip.AddrPort]uint32, from netip.AddrPort) []byte {
	var sp stamp.SenderPacket
	sp.UnmarshalBinary(probe)
	if st.dwell > 0 {
		time.Sleep(st.dwell) // the reflector's own processing time, T3 - T2
	}
	rp := stamp.ReflectorPacket{Sequence: sp.Sequence, SSID: sp.SSID, SenderSequence: sp.Sequence,
		SenderTimestamp: sp.Timestamp, SenderErrorEstimate: sp.ErrorEstimate, SenderTTL: 64,
		ErrorEstimate: stamp.NewErrorEstimate(true, time.Microsecond)}
	if st.counted {
		rp.Sequence = counters[from]
		counters[from]++
	}
	if st.zeroSSID {
		rp.SSID = 0
	}
	out := make([]byte, len(probe))
	rp.MarshalTo(out)
	t3 := time.Now()
	if st.ptp {
		out[stamp.OffsetErrorEstimate] |= 1 << 6 // Z: PTPv2 truncated timestamps
		binary.BigEndian.PutUint64(out[stamp.OffsetTimestamp:], stamp.NewPTPTimestamp(t3))
		binary.BigEndian.PutUint64(out[stamp.OffsetReceiveTimestamp:], stamp.NewPTPTimestamp(t2))
	} else {
		binary.BigEndian.PutUint64(out[stamp.OffsetTimestamp:], uint64(stamp.NewTimestamp(t3)))
		binary.BigEndian.PutUint64(out[stamp.OffsetReceiveTimestamp:], uint64(stamp.NewTimestamp(t2)))
	}
	if st.swapT2T3 {
		t2, t3 := out[stamp.OffsetReceiveTimestamp:][:8], out[stamp.OffsetTimestamp:][:8]
		var tmp [8]byte
		copy(tmp[:], t2)
		copy(t2, t3)
		copy(t3, tmp[:])
	}
	if st.zeroT2 {
		clear(out[stamp.OffsetReceiveTimestamp:][:8])
	}
	if st.replyLen > 0 {
		out = out[:st.replyLen]
	}
	return out
}

// TestTWAMPLightInterop probes scripted reflectors that answer as
// TWAMP-Light and STAMP reflectors do in the field, not as ours does:
// every probe must count as answered, with what the reply carries and
// nothing it does not.
func TestTWAMPLightInterop(t *testing.T) {
	cases := []struct {
		name  string
		style twampStyle
		// hops: the reply carries the Sender TTL, so the hop count is known.
		hops bool
	}{
		{"short 38-octet replies, no Sender TTL", twampStyle{replyLen: 38, zeroSSID: true}, false},
		{"36-octet replies, through the Sender Timestamp", twampStyle{replyLen: 36, zeroSSID: true}, false},
		{"PTP timestamps", twampStyle{ptp: true, dwell: 2 * time.Millisecond}, true},
		{"NTP timestamps", twampStyle{dwell: 2 * time.Millisecond}, true},
		{"SSID 0", twampStyle{zeroSSID: true}, true},
		{"sequence numbers counted per session", twampStyle{counted: true, zeroSSID: true}, true},
		{"sequence numbers copied", twampStyle{zeroSSID: true}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := scriptedReflector(t, tc.style)
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			mod := fastModule()
			mod.Interval = 10 * time.Millisecond
			s, _, err := mgr.Get(context.Background(), "interop", mod, dst.String())
			if err != nil {
				t.Fatal(err)
			}
			var sn Snapshot
			testlab.WaitFor(t, 30*time.Second, "100 decided probes in the window", func() bool {
				sn = s.Snapshot()
				return sn.WindowSent >= 100
			})
			if sn.WindowLost != 0 || sn.Lost != 0 || sn.Late != 0 || !sn.Success {
				t.Fatalf("answered probes not counted: window %d/%d lost, lost %d, late %d, success %v",
					sn.WindowLost, sn.WindowSent, sn.Lost, sn.Late, sn.Success)
			}
			if got := sn.Hops >= 0; got != tc.hops {
				t.Errorf("hop count %d: known %v, want %v", sn.Hops, got, tc.hops)
			}
			if sn.Stateful != tc.style.counted {
				t.Errorf("stateful %v, want %v", sn.Stateful, tc.style.counted)
			}
			if sn.ForwardLost != 0 || sn.BackwardLost != 0 {
				t.Errorf("directional loss without loss: forward %d, backward %d", sn.ForwardLost, sn.BackwardLost)
			}
			if tc.style.dwell > 0 {
				checkDwell(t, s, tc.style.dwell, sn)
			}
		})
	}
}

// checkDwell checks that the reflector's dwell time was read in the
// timestamps' format: at least what the reflector held each probe, less
// than the round trip it is part of, and subtracted from the RTT.
func checkDwell(t *testing.T, s *Session, held time.Duration, sn Snapshot) {
	t.Helper()
	s.mu.Lock()
	n, sum := s.dwellHist.Count()
	s.mu.Unlock()
	if n == 0 {
		t.Fatal("no dwell time observed")
	}
	mean := time.Duration(sum / float64(n) * 1e9)
	if mean < held || mean > 100*held {
		t.Errorf("mean dwell %v over %d replies; the reflector held each probe for %v", mean, n, held)
	}
	if rttMin := time.Duration(sn.RTTMin * 1e9); rttMin >= held {
		t.Errorf("minimum RTT %v: the dwell of at least %v was not subtracted", rttMin, held)
	}
}

// TestSessionsShareSSIDZeroingReflector runs two sessions against one
// scripted reflector that zeroes the SSID, as twampy and other TWAMP-Light
// reflectors do: two spellings of one target (one pool, one socket per
// flow, one destination) and two modules that differ only in DSCP. Each
// session must get its own replies: no loss, no duplicates, nothing
// unmatched, whatever the reflector does with the SSID.
func TestSessionsShareSSIDZeroingReflector(t *testing.T) {
	for _, counted := range []bool{false, true} {
		dst := scriptedReflector(t, twampStyle{zeroSSID: true, counted: counted})
		mod := fastModule()
		mod.Interval, mod.Port = 10*time.Millisecond, int(dst.Port())
		ef := *mod
		ef.DSCP = 46
		for _, tc := range []struct {
			name string
			a, b sessionRef
		}{
			{"two spellings of one target", sessionRef{"m", mod, dst.Addr().String()}, sessionRef{"m", mod, dst.String()}},
			{"two modules of different DSCP", sessionRef{"be", mod, dst.String()}, sessionRef{"ef", &ef, dst.String()}},
		} {
			name := tc.name
			if counted {
				name += ", stateful"
			}
			t.Run(name, func(t *testing.T) {
				mgr := NewManager(Options{}, nil, discard)
				defer mgr.Close()
				var ss []*Session
				for _, r := range []sessionRef{tc.a, tc.b} {
					s, _, err := mgr.Get(context.Background(), r.module, r.cfg, r.target)
					if err != nil {
						t.Fatal(err)
					}
					ss = append(ss, s)
				}
				testlab.WaitFor(t, 30*time.Second, "100 decided probes in both windows", func() bool {
					return ss[0].Snapshot().WindowSent >= 100 && ss[1].Snapshot().WindowSent >= 100
				})
				for i, s := range ss {
					sn := s.Snapshot()
					if sn.Lost != 0 || sn.Duplicated != 0 || sn.Late != 0 || sn.Received == 0 {
						t.Errorf("session %d (%s %s): received %d, lost %d, duplicated %d, late %d; want its own replies only",
							i, s.Module, s.Target, sn.Received, sn.Lost, sn.Duplicated, sn.Late)
					}
					if sn.Stateful != counted || sn.ForwardLost+sn.BackwardLost != 0 {
						t.Errorf("session %d: stateful %v (want %v), forward lost %d, backward lost %d",
							i, sn.Stateful, counted, sn.ForwardLost, sn.BackwardLost)
					}
				}
				for _, m := range slices.Compact([]string{tc.a.module, tc.b.module}) {
					if n := testutil.ToFloat64(mgr.metrics.unmatched.WithLabelValues(m)); n != 0 {
						t.Errorf("module %s: %v replies unmatched", m, n)
					}
				}
			})
		}
	}
}

// sessionRef names a session: module, its config, target.
type sessionRef struct {
	module string
	cfg    *config.Module
	target string
}
