package clockstatus

import (
	"testing"
	"time"
)

func TestEstimate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		m      Mode
		k      kernelStatus
		synced bool
		err    time.Duration
	}{
		{"auto, kernel synchronised", Auto, kernelStatus{true, 25 * time.Microsecond}, true, 25 * time.Microsecond},
		{"auto, kernel not", Auto, kernelStatus{false, 16 * time.Second}, false, 16 * time.Second},
		{"auto, nothing known", Auto, kernelStatus{}, false, time.Millisecond},
		{"true overrides", Synchronized, kernelStatus{false, 300 * time.Microsecond}, true, 300 * time.Microsecond},
		{"false overrides", Unsynchronized, kernelStatus{true, 2 * time.Microsecond}, false, 2 * time.Microsecond},
	} {
		e := estimate(tc.m, tc.k)
		// The stated error is rounded up to what the field can express,
		// within 1/128 of it.
		if e.Synchronized() != tc.synced || e.Duration() < tc.err || e.Duration() > tc.err+tc.err/128+1 {
			t.Errorf("%s: S=%v error %v, want S=%v error %v", tc.name, e.Synchronized(), e.Duration(), tc.synced, tc.err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"auto": Auto, "true": Synchronized, "false": Unsynchronized} {
		if m, err := ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", s, m, err, want)
		}
	}
	if _, err := ParseMode("yes"); err == nil {
		t.Error(`ParseMode("yes") accepted`)
	}
}

// Start serves what the kernel says, and the override wins over it.
func TestStartReadsTheKernel(t *testing.T) {
	defer Stop()
	k := readKernel()
	Start(Auto)
	if got := ErrorEstimate(); got.Synchronized() != k.synced {
		t.Errorf("auto: S=%v, the kernel says synchronised=%v", got.Synchronized(), k.synced)
	}
	Start(Synchronized)
	if !ErrorEstimate().Synchronized() {
		t.Error("--clock.synchronized=true: S=0")
	}
	Start(Unsynchronized)
	if ErrorEstimate().Synchronized() {
		t.Error("--clock.synchronized=false: S=1")
	}
}

func BenchmarkErrorEstimate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ErrorEstimate()
	}
}
