//go:build linux && !llama_portable

package prober

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/netns"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// roundTargets is how many sessions BenchmarkProbeRoundTrip probes at
// once: one probe each per round.
const roundTargets = 64

// BenchmarkProbeRoundTrip measures a probe's whole cost on one host: sent
// (encoded, sendmmsg(2)), answered on loopback (by the in-process
// reflector for stamp, by the kernel for icmp), read (recvmmsg(2)),
// decoded and accounted. Each round sends one probe to each of 64 targets
// and waits for every reply; it reports the process's CPU time (user and
// system, the answers included) per probe as cpu-ns/probe.
func BenchmarkProbeRoundTrip(b *testing.B) {
	for _, name := range []string{config.ProberSTAMP, config.ProberICMP} {
		b.Run(name, func(b *testing.B) {
			ns := netns.New(b)
			// Every address of 198.18.40.0/24 is local: 64 targets.
			ns.Run(b, "ip", "route", "add", "local", "198.18.40.0/24", "dev", "lo")
			ns.Run(b, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
			mgr, sessions := startRoundTargets(b, ns, name)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				benchRound(b, mgr, sessions)
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N*roundTargets), "cpu-ns/probe")
		})
	}
}

// startRoundTargets starts the sessions of BenchmarkProbeRoundTrip in ns
// and waits for their first replies. Their interval of an hour leaves the
// sending to benchRound.
func startRoundTargets(b *testing.B, ns *netns.NS, name string) (*Manager, []*Session) {
	m := decodeModule(b, name)
	m.Interval, m.Timeout, m.Window = time.Hour, 10*time.Second, time.Hour
	if name == config.ProberSTAMP {
		if err := ns.Do(func() error {
			r, err := reflector.New(reflector.Config{ListenAddresses: []string{"0.0.0.0:862"}}, nil, discard)
			if err == nil {
				r.Serve()
				b.Cleanup(func() { r.Close() })
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	mgr := NewManager(Options{}, nil, discard)
	b.Cleanup(mgr.Close)
	sessions := make([]*Session, roundTargets)
	if err := ns.Do(func() error {
		for i := range sessions {
			var err error
			if sessions[i], _, err = mgr.Get(context.Background(), name, m, fmt.Sprintf("198.18.40.%d", i+1)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 10*time.Second, "every first reply", func() bool { return received(sessions) == roundTargets })
	return mgr, sessions
}

// benchRound sends one probe to each session, as a scheduler round does,
// and waits for every reply. The scheduler itself is idle: the sessions'
// next probes are an hour away.
func benchRound(b *testing.B, mgr *Manager, sessions []*Session) {
	want := received(sessions) + roundTargets
	mgr.sendRound(sessions)
	deadline := time.Now().Add(10 * time.Second)
	for received(sessions) < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d replies after 10s", received(sessions)-want+roundTargets, roundTargets)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// received returns the replies the sessions counted.
func received(sessions []*Session) int {
	n := 0
	for _, s := range sessions {
		s.mu.Lock()
		n += int(s.c.Received)
		s.mu.Unlock()
	}
	return n
}

// cpuTime returns the process's user and system CPU time in ns.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
