//go:build linux

package procmeter

import (
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (le (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 11 0 123456 1641936384 3534 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n"
	s, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.UTime != 250 || s.STime != 75 || s.Threads != 11 {
		t.Errorf("got utime %d stime %d threads %d, want 250 75 11", s.UTime, s.STime, s.Threads)
	}
	if s.CPU() != 3250*time.Millisecond {
		t.Errorf("CPU() = %v, want 3.25s", s.CPU())
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 12 13 14 15 16 17 18"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) succeeded", bad)
		}
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tle\nVmPeak:\t 1641936 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   14136 kB\nThreads:\t11\n"
	m, err := parseProcStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 14136*1024 || m.HWM != 20480*1024 {
		t.Errorf("got %+v", m)
	}
	if _, err := parseProcStatus([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("no VmRSS: want an error")
	}
	if _, err := parseProcStatus([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Error("bad unit: want an error")
	}
}

func TestParseCPUStat(t *testing.T) {
	stat := "cpu  300 0 100 600 0 0 0 0 0 0\ncpu0 100 0 50 300 10 0 5 35 0 0\ncpu1 200 0 50 300 0 0 0 0 0 0\nintr 1 2 3\n"
	m, err := parseCPUStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[0] != (cpuTimes{Total: 500, Idle: 310, Steal: 35}) || m[1].Total != 550 {
		t.Fatalf("got %+v", m)
	}
	later := map[int]cpuTimes{0: {Total: 600, Idle: 330, Steal: 45}, 1: {Total: 650, Idle: 300}}
	u := cpuUsageBetween(m, later)
	if len(u) != 2 || u[0].Busy != 80 || u[0].Steal != 10 || u[1].Busy != 100 {
		t.Errorf("usage %+v", u)
	}
}
