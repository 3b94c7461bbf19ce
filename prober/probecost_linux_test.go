//go:build linux && !llama_portable

package prober

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/reflector"
	"golang.org/x/sys/unix"
)

// probeCostTargets is how many loopback targets BenchmarkProbeCost probes
// per round, one session each.
const probeCostTargets = 64

// BenchmarkProbeCost measures what a probe costs in each protocol: each
// round sends one probe to each of 64 loopback targets (127.0.0.1-64) with
// the scheduler's sendRound and waits until all are answered. The targets
// run in the process (the reflector; listeners whose application accepts
// and closes) or in its kernel (ICMP echo, over raw sockets as root), so
// cpu-ns/probe, the process's user and system time, counts both ends and
// the kernel's work for them, and allocs/probe both ends' allocations. ns/probe is wall time, which for stamp includes waiting for
// the receive loops' rounds (every 200µs here).
func BenchmarkProbeCost(b *testing.B) {
	for _, name := range []string{config.ProberSTAMP, config.ProberICMP, config.ProberTCP} {
		b.Run(name, func(b *testing.B) {
			mgr := NewManager(Options{}, nil, discard)
			defer mgr.Close()
			sessions := probeCostSessions(b, mgr, name)
			// From here on the benchmark sends the rounds: the scheduler
			// would race it for the flow sockets' batches.
			mgr.sched.close()
			mgr.sched = newScheduler(nil)
			go mgr.sched.run()
			want := uint64(1)
			var ms0, ms1 runtime.MemStats
			var ru0, ru1 unix.Rusage
			runtime.ReadMemStats(&ms0)
			unix.Getrusage(unix.RUSAGE_SELF, &ru0)
			rounds := 0
			for b.Loop() {
				want++
				mgr.sendRound(sessions)
				for !allDecided(sessions, want) {
					time.Sleep(200 * time.Microsecond)
					mgr.rounds.broadcast()
				}
				rounds++
			}
			unix.Getrusage(unix.RUSAGE_SELF, &ru1)
			runtime.ReadMemStats(&ms1)
			probes := float64(rounds * probeCostTargets)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(b.Elapsed())/probes, "ns/probe")
			b.ReportMetric(float64(cpu)/probes, "cpu-ns/probe")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/probes, "allocs/probe")
			var lost uint64
			for _, s := range sessions {
				lost += s.Snapshot().Lost
			}
			if lost != 0 {
				b.Fatalf("%d probes lost on loopback", lost)
			}
		})
	}
}

// probeCostSessions starts one session of prober name per loopback target
// and waits for their first answers.
func probeCostSessions(b *testing.B, mgr *Manager, name string) []*Session {
	var targets []string
	switch name {
	case config.ProberICMP:
		for i := range probeCostTargets {
			targets = append(targets, fmt.Sprintf("127.0.0.%d", i+1))
		}
	case config.ProberTCP:
		for i := range probeCostTargets {
			l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.%d:0", i+1))
			if err != nil {
				b.Fatal(err)
			}
			newSink(b, l)
			targets = append(targets, l.Addr().String())
		}
	default:
		var addrs []string
		for i := range probeCostTargets {
			addrs = append(addrs, fmt.Sprintf("127.0.0.%d:0", i+1))
		}
		// As the exporter runs it: with the receive delay recorded.
		refl, err := reflector.New(reflector.Config{ListenAddresses: addrs, ReceiveDelay: NewReceiveDelay("reflector").ObserveBatch}, nil, discard)
		if err != nil {
			b.Fatal(err)
		}
		refl.Serve()
		b.Cleanup(func() { refl.Close() })
		for _, a := range refl.Addrs() {
			targets = append(targets, a.String())
		}
	}
	m := fastModule()
	switch name {
	case config.ProberICMP:
		m = decodeModule(b, name)
		m.Timeout = time.Second
	case config.ProberTCP:
		m = tcpModule(b, 0)
	}
	// Probes come from the benchmark's rounds only.
	m.Interval, m.Window = 1000*time.Hour, 1000*time.Hour
	var sessions []*Session
	for _, target := range targets {
		s, _, err := mgr.Get(context.Background(), "bench", m, target)
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	testlab.WaitFor(b, 10*time.Second, "every session's first answer", func() bool { return allDecided(sessions, 1) })
	return sessions
}

// allDecided reports whether every session has decided at least n probes.
func allDecided(sessions []*Session, n uint64) bool {
	for _, s := range sessions {
		s.mu.Lock()
		c := s.c.Received + s.c.Lost
		s.mu.Unlock()
		if c < n {
			return false
		}
	}
	return true
}
