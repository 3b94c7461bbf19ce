package prober

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
)

const ms = int64(time.Millisecond)

// testSession returns a session with interval 100ms, timeout 1s, window 10s
// and 2 flows, driven by explicit monotonic times.
func testSession(t *testing.T) *Session {
	t.Helper()
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window, m.Flows = 100*time.Millisecond, time.Second, 10*time.Second, 2
	return newSession("test", &m, resolvedTarget{name: "198.18.0.2", host: "198.18.0.2", port: 862, dst: netip.MustParseAddrPort("198.18.0.2:862")}, 0)
}

// answer delivers a stateless reflector's reply to probe seq at monotonic
// time t4 with the given dwell (usable T2 and T3 when it is not 0).
func answer(s *Session, seq uint32, t4, dwell int64) {
	stamps := StampsNone
	if dwell != 0 {
		stamps = StampsUsable
	}
	s.onReply(&timedReply{seq: seq, reflSeq: seq, t4: t4, stamps: stamps, dwell: dwell, senderTTL: -1, dscp: -1, dscp2: -1})
}

func TestWindowCountsDecidedProbesOnly(t *testing.T) {
	s := testSession(t)
	s.recordSend(0)
	sn := s.snapshot(500 * ms)
	if sn.WindowSent != 0 || sn.Lost != 0 || !math.IsNaN(sn.LossRatio) {
		t.Fatalf("in-flight probe counted: window sent %d, lost %d, ratio %v", sn.WindowSent, sn.Lost, sn.LossRatio)
	}
	sn = s.snapshot(1100 * ms)
	if sn.Lost != 1 || sn.WindowSent != 1 || sn.WindowLost != 1 || sn.LossRatio != 1 {
		t.Fatalf("after timeout: lost %d, window %d/%d, ratio %v; want 1, 1/1, 1", sn.Lost, sn.WindowLost, sn.WindowSent, sn.LossRatio)
	}
	if sn.Success {
		t.Fatal("probe_success with no reply")
	}
	if got, want := sn.Window, 0.1; math.Abs(got-want) > 1e-9 {
		t.Fatalf("window span %v, want %v", got, want)
	}
}

func TestLateDuplicateReordered(t *testing.T) {
	s := testSession(t)
	for i := range int64(4) {
		s.recordSend(i * 100 * ms)
	}
	answer(s, 2, 210*ms, 0)  // answered in time
	answer(s, 0, 220*ms, 0)  // below the highest answered: reordered
	answer(s, 0, 230*ms, 0)  // second reply: duplicate
	answer(s, 1, 1500*ms, 0) // after timeout: lost and late
	answer(s, 1, 1600*ms, 0) // a second late reply is a duplicate
	answer(s, 9, 300*ms, 0)  // never sent: ignored
	// Probe 3 (sent at 300ms) is still in flight at 1.25s.
	sn := s.snapshot(1250 * ms)
	want := Counters{Sent: 4, Received: 2, Lost: 1, Late: 1, Duplicated: 2, Reordered: 1, TimestampFallbacks: 2}
	if sn.Counters != want {
		t.Fatalf("counters %+v, want %+v", sn.Counters, want)
	}
	if sn.WindowSent != 3 || sn.WindowLost != 1 {
		t.Fatalf("window %d/%d, want 1 lost of 3 decided", sn.WindowLost, sn.WindowSent)
	}
	if sn.InFlight != 1 || sn.Sent != sn.Received+sn.Lost+uint64(sn.InFlight) {
		t.Fatalf("sent %d != received %d + lost %d + in flight %d (want 1)", sn.Sent, sn.Received, sn.Lost, sn.InFlight)
	}
}

func TestRTTSubtractsDwellAndSummarises(t *testing.T) {
	s := testSession(t)
	rtts := []int64{1, 3, 2, 4} // ms, after dwell
	for i, r := range rtts {
		sent := int64(i) * 100 * ms
		s.recordSend(sent)
		answer(s, uint32(i), sent+r*ms+ms/2, ms/2) // dwell 0.5ms subtracted
	}
	sn := s.snapshot(1400 * ms)
	if sn.RTTCount != 4 || sn.WindowSent != 4 || sn.LossRatio != 0 {
		t.Fatalf("count %d, window sent %d, loss %v", sn.RTTCount, sn.WindowSent, sn.LossRatio)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("min", sn.RTTMin, 0.001)
	near("max", sn.RTTMax, 0.004)
	near("sum", sn.RTTSum, 0.010)
	near("p50", sn.Quantiles[0.5], 0.002)
	near("p99", sn.Quantiles[0.99], 0.004)
	near("jitter", sn.Jitter, (0.002+0.001+0.002)/3)
	near("stddev", sn.RTTStdDev, math.Sqrt(1.25e-6))
	if !sn.Success {
		t.Error("probe_success false with replies")
	}
}

func TestDwellFromAnotherClockNeverMakesRTTNegative(t *testing.T) {
	s := testSession(t)
	s.recordSend(0)
	answer(s, 0, 2*ms, 5*ms) // reflector claims more dwell than the RTT
	sn := s.snapshot(1100 * ms)
	if sn.RTTMin != 0.002 {
		t.Fatalf("RTT %v, want the unadjusted 0.002", sn.RTTMin)
	}
}

func TestRingWrapKeepsAccounting(t *testing.T) {
	s := testSession(t)
	n := int64(len(s.slots)) * 3
	var now int64
	for i := range n {
		now = i * 100 * ms
		seq, flow, _ := s.recordSend(now)
		if int(seq%2) != flow {
			t.Fatalf("seq %d on flow %d: flows must rotate", seq, flow)
		}
		if i%10 != 0 { // every tenth probe is lost
			answer(s, seq, now+ms, 0)
		}
	}
	if s.onReply(&timedReply{seq: 0, reflSeq: 0, t4: now + 2*ms, senderTTL: -1, dscp: -1, dscp2: -1}) {
		t.Error("a reply to a probe whose slot was reused was taken")
	}
	if s.onReply(&timedReply{seq: s.next + 5, reflSeq: 0, t4: now + 2*ms, senderTTL: -1, dscp: -1, dscp2: -1}) {
		t.Error("a reply to a probe never sent was taken")
	}
	sn := s.snapshot(now + 1050*ms) // window: the last 100 probes
	if sn.Sent != uint64(n) || sn.Received+sn.Lost != sn.Sent || sn.Late != 0 {
		t.Fatalf("sent %d received %d lost %d late %d", sn.Sent, sn.Received, sn.Lost, sn.Late)
	}
	if sn.WindowSent != 100 || sn.WindowLost != 10 {
		t.Fatalf("window %d/%d, want 10 lost of 100", sn.WindowLost, sn.WindowSent)
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint16
		err  string
	}{
		{in: "198.18.0.2", host: "198.18.0.2", port: 862},
		{in: "198.18.0.2:9000", host: "198.18.0.2", port: 9000},
		{in: "[2001:db8::1]:9000", host: "2001:db8::1", port: 9000},
		{in: "2001:db8::1", host: "2001:db8::1", port: 862},
		{in: "host.example", host: "host.example", port: 862},
		{in: "", err: "target parameter is missing"},
		{in: "host:0", err: `target "host:0": port must be 1..65535`},
		{in: "host:65536", err: `target "host:65536": port must be 1..65535`},
		{in: "host:http", err: `target "host:http": port must be 1..65535`},
		{in: ":862", err: `target ":862" has no host`},
		{in: "http://host/", err: `target "http://host/" is not host[:port]`},
		{in: "a:b:c", err: `target "a:b:c" is not host[:port]`},
	} {
		host, port, err := ParseTarget(tc.in, 862)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseTarget(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("ParseTarget(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestKernelTimestampsPreferredAndGuarded(t *testing.T) {
	s := testSession(t)
	const wall = int64(1_800_000_000) * 1e9 // kernel timestamps are Unix ns
	s.recordSend(0)
	s.onTxTimestamp(0, wall+10*1000)
	// User space saw 1ms, the kernel 800µs: the kernel's figure wins.
	s.onReply(&timedReply{seq: 0, reflSeq: 0, t4: ms, rxKernel: wall + 10*1000 + 800*1000, senderTTL: -1, dscp: -1, dscp2: -1})
	// A clock step of -1h between T1 and T4: negative kernel RTT, fall back.
	s.recordSend(100 * ms)
	s.onTxTimestamp(1, wall+100*ms)
	s.onReply(&timedReply{seq: 1, reflSeq: 1, t4: 102 * ms, rxKernel: wall + 100*ms - int64(time.Hour), senderTTL: -1, dscp: -1, dscp2: -1})
	// A step forward: longer than the monotonic RTT, fall back.
	s.recordSend(200 * ms)
	s.onTxTimestamp(2, wall+200*ms)
	s.onReply(&timedReply{seq: 2, reflSeq: 2, t4: 203 * ms, rxKernel: wall + 200*ms + int64(time.Hour), senderTTL: -1, dscp: -1, dscp2: -1})
	sn := s.snapshot(1300 * ms)
	if sn.RTTMin != 0.0008 || sn.Quantiles[0.5] != 0.002 || sn.RTTMax != 0.003 {
		t.Fatalf("RTTs min %v p50 %v max %v; want 0.0008 (kernel), 0.002 and 0.003 (monotonic fallbacks)", sn.RTTMin, sn.Quantiles[0.5], sn.RTTMax)
	}
	if sn.TimestampFallbacks != 2 || sn.KernelTimestamps {
		t.Fatalf("fallbacks %d, kernel %v; want 2 and false after a fallback", sn.TimestampFallbacks, sn.KernelTimestamps)
	}
}

// A wall-clock step forward between a reply's arrival and its read makes
// the arrival, read time less the kernel's wait, fall before T1. The reply
// is an answer all the same, timed by the kernel (both of its timestamps
// are from before the step); only a reply read after the timeout is late.
func TestClockStepBetweenArrivalAndRead(t *testing.T) {
	s := testSession(t)
	const wall = int64(1_800_000_000) * 1e9
	const step = 50 * ms
	s.recordSend(100 * ms)
	s.onTxTimestamp(0, wall+100*ms)
	rx, read := wall+100*ms+200*1000, 100*ms+300*1000
	s.onReply(&timedReply{seq: 0, reflSeq: 0, t4: arrival(read, rx+100*1000+step, rx), read: read, rxKernel: rx,
		senderTTL: -1, dscp: -1, dscp2: -1})
	s.recordSend(200 * ms)
	s.onReply(&timedReply{seq: 1, reflSeq: 1, t4: 200*ms - step, read: 200*ms + 2*time.Second.Nanoseconds(),
		senderTTL: -1, dscp: -1, dscp2: -1})
	sn := s.snapshot(1300 * ms)
	if sn.Received != 1 || sn.Late != 1 || sn.Lost != 1 {
		t.Fatalf("received %d, late %d, lost %d; want the first answered and the second (read after the timeout) late",
			sn.Received, sn.Late, sn.Lost)
	}
	if sn.RTTMin != 0.0002 || !sn.KernelTimestamps {
		t.Fatalf("RTT %v, kernel timestamps %v; want the kernel's 200µs", sn.RTTMin, sn.KernelTimestamps)
	}
}

// statefulReply answers probe seq as a stateful reflector that has counted
// reflSeq earlier probes of this flow.
func statefulReply(s *Session, seq, reflSeq uint32, t4 int64) {
	s.onReply(&timedReply{seq: seq, reflSeq: reflSeq, t4: t4, senderTTL: -1, dscp: -1, dscp2: -1})
}

func TestDirectionalLossFromStatefulReflector(t *testing.T) {
	s := testSession(t) // 2 flows
	// Flow 0 carries even sequence numbers, flow 1 odd ones. The
	// reflector counts per flow. Lose seq 2 forward (the reflector never
	// counts it) and seq 5 backward (counted, reply lost).
	counted := [2]uint32{}
	for seq := uint32(0); seq < 12; seq++ {
		now := int64(seq) * 100 * ms
		s.recordSend(now)
		f := seq % 2
		if seq == 2 {
			continue // lost on the way out
		}
		r := counted[f]
		counted[f]++
		if seq == 5 {
			continue // reflected, lost on the way back
		}
		statefulReply(s, seq, r, now+ms)
	}
	sn := s.snapshot(12*100*ms + 1100*ms) // all decided, all in the window
	if !sn.Stateful || sn.Lost != 2 || sn.ForwardLost != 1 || sn.BackwardLost != 1 {
		t.Fatalf("stateful %v lost %d forward %d backward %d; want true 2 1 1", sn.Stateful, sn.Lost, sn.ForwardLost, sn.BackwardLost)
	}
	if sn.WindowForwardLost != 1 || sn.WindowBackwardLost != 1 || sn.WindowSent != 12 {
		t.Fatalf("window forward %d backward %d of %d", sn.WindowForwardLost, sn.WindowBackwardLost, sn.WindowSent)
	}
}

func TestStatelessReflectorGivesNoDirection(t *testing.T) {
	s := testSession(t)
	for seq := uint32(0); seq < 10; seq++ {
		s.recordSend(int64(seq) * 100 * ms)
		if seq != 4 {
			answer(s, seq, int64(seq)*100*ms+ms, 0)
		}
	}
	sn := s.snapshot(3 * int64(time.Second))
	if sn.Stateful || sn.ForwardLost != 0 || sn.BackwardLost != 0 || sn.Lost != 1 {
		t.Fatalf("stateless reflector: stateful %v, forward %d, backward %d, lost %d", sn.Stateful, sn.ForwardLost, sn.BackwardLost, sn.Lost)
	}
}

func TestHopsAndDSCPRemarking(t *testing.T) {
	s := testSession(t)
	s.pool = &pool{ttl: [2]int{64, 64}}
	s.cfg.DSCP = 46
	replies := []timedReply{
		{senderTTL: 62, dscp: 46, dscp2: 46}, // 2 hops, untouched
		{senderTTL: 62, dscp: 0, dscp2: 46},  // remarked on the way back
		{senderTTL: 61, dscp: 46, dscp2: 10}, // 3 hops; remarked on the way out
		{senderTTL: -1, dscp: 46, dscp2: -1}, // no TLV, TTL unknown: nothing learnt
	}
	for i := range replies {
		seq := uint32(i)
		s.recordSend(int64(i) * 100 * ms)
		r := replies[i]
		r.seq, r.reflSeq, r.t4 = seq, seq, int64(i)*100*ms+ms
		s.onReply(&r)
	}
	sn := s.snapshot(2 * int64(time.Second))
	if sn.Hops != 3 || sn.HopsChanges != 1 {
		t.Errorf("hops %d changes %d, want 3 and 1", sn.Hops, sn.HopsChanges)
	}
	if sn.DSCPRemarkedForward != 1 || sn.DSCPRemarkedBackward != 1 {
		t.Errorf("remarked forward %d backward %d, want 1 and 1", sn.DSCPRemarkedForward, sn.DSCPRemarkedBackward)
	}
}

func TestFlowMetricsCountPerFlow(t *testing.T) {
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window, m.Flows, m.FlowMetrics = 100*time.Millisecond, time.Second, 10*time.Second, 4, true
	s := newSession("test", &m, resolvedTarget{name: "198.18.0.2", host: "198.18.0.2", port: 862, dst: netip.MustParseAddrPort("198.18.0.2:862")}, 0)
	for seq := uint32(0); seq < 40; seq++ {
		s.recordSend(int64(seq) * 100 * ms)
		if seq%4 != 3 { // flow 3 is a black hole
			answer(s, seq, int64(seq)*100*ms+ms, 0)
		}
	}
	sn := s.snapshot(40*100*ms + 1100*ms)
	for f := range 4 {
		wantLost := 0
		if f == 3 {
			wantLost = 10
		}
		if sn.FlowSent[f] != 10 || sn.FlowLost[f] != uint64(wantLost) || sn.FlowWindowSent[f] != 10 || sn.FlowWindowLost[f] != wantLost {
			t.Errorf("flow %d: sent %d lost %d window %d/%d; want 10, %d", f, sn.FlowSent[f], sn.FlowLost[f], sn.FlowWindowLost[f], sn.FlowWindowSent[f], wantLost)
		}
	}
	if sn.LossRatio != 0.25 {
		t.Errorf("window loss %v, want 0.25", sn.LossRatio)
	}
}

func TestReorderingJudgedByArrivalTime(t *testing.T) {
	s := testSession(t)
	for i := range int64(4) {
		s.recordSend(i * 10 * ms)
	}
	const wall = int64(1_800_000_000) * 1e9
	rx := func(seq uint32, arrival int64) {
		s.onReply(&timedReply{seq: seq, reflSeq: seq, t4: 50 * ms, rxKernel: wall + arrival, senderTTL: -1, dscp: -1, dscp2: -1})
	}
	rx(1, 20*ms) // processed before 0, but arrived after it: in order
	rx(0, 10*ms)
	rx(3, 30*ms) // arrived before 2: 2 is reordered, whatever the processing order
	rx(2, 35*ms)
	if sn := s.snapshot(60 * ms); sn.Reordered != 1 {
		t.Fatalf("reordered %d, want 1 (probe 2 arrived after probe 3)", sn.Reordered)
	}
}

// TestReorderingWhateverTheProcessingOrder delivers the same arrivals
// (probe 1 overtakes probe 0; probe 2 comes last) in every processing
// order: exactly one reordered reply every time.
func TestReorderingWhateverTheProcessingOrder(t *testing.T) {
	const wall = int64(1_800_000_000) * 1e9
	arrivals := map[uint32]int64{0: 20 * ms, 1: 10 * ms, 2: 30 * ms}
	for _, order := range [][]uint32{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		s := testSession(t)
		for i := range int64(3) {
			s.recordSend(i * ms)
		}
		for _, seq := range order {
			s.onReply(&timedReply{seq: seq, reflSeq: seq, t4: 40 * ms, rxKernel: wall + arrivals[seq], senderTTL: -1, dscp: -1, dscp2: -1})
		}
		if sn := s.snapshot(50 * ms); sn.Reordered != 1 {
			t.Errorf("processing order %v: reordered %d, want 1 (probe 0 arrived after probe 1)", order, sn.Reordered)
		}
	}
}
