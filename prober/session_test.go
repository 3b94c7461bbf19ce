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
	return newSession("test", &m, "198.18.0.2", "198.18.0.2", 862, netip.MustParseAddrPort("198.18.0.2:862"), 0)
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
	s.onReply(2, 210*ms, 0)  // answered in time
	s.onReply(0, 220*ms, 0)  // below the highest answered: reordered
	s.onReply(0, 230*ms, 0)  // second reply: duplicate
	s.onReply(1, 1500*ms, 0) // after timeout: lost and late
	s.onReply(1, 1600*ms, 0) // a second late reply is a duplicate
	s.onReply(9, 300*ms, 0)  // never sent: ignored
	// Probe 3 (sent at 300ms) is still in flight at 1.25s.
	sn := s.snapshot(1250 * ms)
	want := Counters{Sent: 4, Received: 2, Lost: 1, Late: 1, Duplicated: 2, Reordered: 1}
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
		s.onReply(uint32(i), sent+r*ms+ms/2, ms/2) // dwell 0.5ms subtracted
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
	s.onReply(0, 2*ms, 5*ms) // reflector claims more dwell than the RTT
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
			s.onReply(seq, now+ms, 0)
		}
	}
	s.onReply(0, now+2*ms, 0)       // reply to a probe whose slot was reused: late
	sn := s.snapshot(now + 1050*ms) // window: the last 100 probes
	if sn.Sent != uint64(n) || sn.Received+sn.Lost != sn.Sent || sn.Late != 1 {
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
