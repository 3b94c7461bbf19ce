//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/gen"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
	"golang.org/x/sys/unix"
)

// reflectorMode is "llama-loadtest reflector": closed-loop throughput of a
// reflector on one core, against a plain Go UDP echo loop as the baseline.
type reflectorMode struct {
	cmd          *kingpin.CmdClause
	ef           exporterFlags
	Baseline     string
	Sockets      int
	Window       int
	PacketSize   int
	Duration     time.Duration
	Warmup       time.Duration
	Drain        time.Duration
	LossTimeout  time.Duration
	CPUReflector string
	CPUGenerator string
	Rounds       int
	SampleEvery  int
	Generator    string
	GSO          bool
	Rate         float64
	CompareArgs  string
}

func addReflectorCmd(app *kingpin.Application) *reflectorMode {
	m := &reflectorMode{}
	c := app.Command("reflector", "Drive reflectors closed-loop and report replies per second and loss: the baseline UDP echo, then llama_exporter's STAMP reflector.")
	m.cmd = c
	addExporterFlags(c, &m.ef, false)
	c.Flag("baseline", "Baseline echo reflector: process (this tool's hidden echo subcommand, pinned like the real one), inprocess (a goroutine on a thread pinned to --cpu.reflector), none.").Default("process").EnumVar(&m.Baseline, "process", "inprocess", "none")
	c.Flag("sockets", "K: generator sockets (distinct source ports).").Default("4").IntVar(&m.Sockets)
	c.Flag("window", "W: outstanding probes per socket; each reply triggers the next probe.").Default("32").IntVar(&m.Window)
	c.Flag("packet-size", "UDP payload octets of a probe (STAMP minimum 44).").Default("44").IntVar(&m.PacketSize)
	c.Flag("duration", "D: measured period per reflector.").Default("10s").DurationVar(&m.Duration)
	c.Flag("warmup", "Load before the measured period.").Default("2s").DurationVar(&m.Warmup)
	c.Flag("drain", "After sending stops, wait this long at most for outstanding replies; what is still missing is lost.").Default("1s").DurationVar(&m.Drain)
	c.Flag("loss-timeout", "An unanswered probe is replaced after this, so that a lost packet does not shrink the window.").Default("200ms").DurationVar(&m.LossTimeout)
	c.Flag("cpu.reflector", "CPU list the reflectors under test are pinned to (taskset -c); empty: no pinning.").Default("1").StringVar(&m.CPUReflector)
	c.Flag("cpu.generator", "CPU list this tool (the load generator) is pinned to; empty: no pinning.").Default("0").StringVar(&m.CPUGenerator)
	c.Flag("rounds", "Measure baseline and llama_exporter this many times, alternating.").Default("1").IntVar(&m.Rounds)
	c.Flag("generator", "poll: the generator busy-polls its sockets (its CPU then reads 100%; see empty receive calls for its headroom); block: it sleeps in the netpoller between replies.").Default("block").EnumVar(&m.Generator, "poll", "block")
	c.Flag("gso", "Send each batch of probes as one UDP GSO write (UDP_SEGMENT); a reflector socket without UDP_GRO receives one datagram per probe, one with UDP_GRO the train as one buffer.").Default("true").BoolVar(&m.GSO)
	c.Flag("rate", "Probes per second over all sockets, at most (a token bucket of --sockets times --window); 0: closed loop, as fast as the reflector answers. For a load below capacity.").Default("0").Float64Var(&m.Rate)
	c.Flag("exporter.compare-args", "Also measure llama_exporter with these extra flags (as llama_exporter+), next to llama_exporter in every round (after it in odd rounds, before it in even ones), e.g. '--collector.host-drops'; the summary gives its ratio.").StringVar(&m.CompareArgs)
	c.Flag("sample-every", "Keep the RTT of one reply in this many.").Default("16").IntVar(&m.SampleEvery)
	return m
}

// check validates the flags without touching the system.
func (m *reflectorMode) check() error {
	switch {
	case m.Sockets < 1 || m.Sockets > 256:
		return fmt.Errorf("--sockets=%d: want 1..256", m.Sockets)
	case m.Window < 1 || m.Window > 4096:
		return fmt.Errorf("--window=%d: want 1..4096", m.Window)
	case m.PacketSize < 44 || m.PacketSize > 1472:
		return fmt.Errorf("--packet-size=%d: want 44..1472", m.PacketSize)
	case m.Duration <= 0 || m.Duration > 10*time.Minute:
		return fmt.Errorf("--duration=%v: want more than 0 and at most 10m", m.Duration)
	case m.Warmup < 0 || m.Warmup > time.Minute:
		return fmt.Errorf("--warmup=%v: want 0..1m", m.Warmup)
	case m.Drain <= 0 || m.Drain > 30*time.Second:
		return fmt.Errorf("--drain=%v: want more than 0 and at most 30s", m.Drain)
	case m.LossTimeout < 10*time.Millisecond || m.LossTimeout > 10*time.Second:
		return fmt.Errorf("--loss-timeout=%v: want 10ms..10s", m.LossTimeout)
	case m.Rounds < 1 || m.Rounds > 20:
		return fmt.Errorf("--rounds=%d: want 1..20", m.Rounds)
	case m.SampleEvery < 1:
		return fmt.Errorf("--sample-every=%d: want at least 1", m.SampleEvery)
	case m.Rate < 0 || math.IsNaN(m.Rate) || math.IsInf(m.Rate, 0):
		return fmt.Errorf("--rate=%v: want 0 (closed loop) or a positive number of probes per second", m.Rate)
	case m.CompareArgs != "" && m.ef.Binary == "":
		return errors.New("--exporter.compare-args needs --exporter.binary")
	case m.Baseline == "none" && m.ef.Binary == "":
		return errors.New("nothing to measure: --baseline=none and no --exporter.binary")
	case m.Baseline == "inprocess" && m.CPUReflector != "" && m.CPUReflector == m.CPUGenerator:
		return errors.New("--baseline=inprocess needs --cpu.reflector different from --cpu.generator")
	}
	for _, c := range []struct{ name, v string }{{"cpu.reflector", m.CPUReflector}, {"cpu.generator", m.CPUGenerator}} {
		if c.v != "" {
			if _, err := parseCPUList(c.v); err != nil {
				return fmt.Errorf("--%s: %w", c.name, err)
			}
		}
	}
	return nil
}

func (m *reflectorMode) validate() error {
	if err := m.check(); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.reflector", m.CPUReflector); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.generator", m.CPUGenerator); err != nil {
		return err
	}
	return m.ef.validate()
}

// reflResult is one measured run of one reflector.
type reflResult struct {
	Impl          string
	Round         int
	Elapsed       time.Duration
	RepliesPerSec float64
	SentPerSec    float64
	Total         gen.Totals
	RTT           map[float64]float64
	RTTSamples    int
	ReflectorCPU  float64 // % of one core, -1 unknown
	GeneratorCPU  float64
	// EmptyRecvPct is the share of the generator's receive calls that
	// found nothing (its headroom when polling); AvgBatch the replies per
	// non-empty receive call.
	EmptyRecvPct float64
	AvgBatch     float64
	Machine      procmeter.MachineMeter
	// Receive-buffer drops on the reflector's sockets over the run (-1
	// when unknown) and on the generator's.
	ReflectorDrops int64
	GeneratorDrops uint64
}

func (r *reflResult) lost() uint64 {
	if r.Total.Received > r.Total.Sent {
		return 0
	}
	return r.Total.Sent - r.Total.Received
}

func (r *reflResult) lossRatio() float64 {
	if r.Total.Sent == 0 {
		return math.NaN()
	}
	return float64(r.lost()) / float64(r.Total.Sent)
}

// reflectorUnderTest is a started reflector.
type reflectorUnderTest struct {
	addr netip.AddrPort
	kind gen.ReplyKind
	cpu  func() (time.Duration, error)
	dead func() error // non-nil error once the reflector has died
	stop func()
	// inSelf: the reflector is a thread of this process, whose CPU must
	// not be counted as the generator's.
	inSelf bool
	pid    int // of a reflector process, for its socket drops; 0 if inSelf
}

func (m *reflectorMode) run(e *env) error {
	if m.CPUGenerator != "" {
		cpus, _ := parseCPUList(m.CPUGenerator)
		if err := pinSelf(cpus); err != nil {
			return err
		}
	}
	loop := "closed loop"
	if m.Rate > 0 {
		loop = fmt.Sprintf("at most %.0f probes/s", m.Rate)
	}
	fmt.Fprintf(e.out, "# reflector: %s, %d sockets x %d outstanding %d-octet probes, warm-up %v, measured %v, drain %v; reflector on CPU %s, generator on CPU %s (GOMAXPROCS %d)\n",
		loop, m.Sockets, m.Window, m.PacketSize, m.Warmup, m.Duration, m.Drain, orNone(m.CPUReflector), orNone(m.CPUGenerator), runtime.GOMAXPROCS(0))
	if m.CompareArgs != "" {
		fmt.Fprintf(e.out, "# llama_exporter+ is llama_exporter with %s\n", m.CompareArgs)
	}
	type impl struct {
		name  string
		start func() (*reflectorUnderTest, error)
	}
	var impls []impl
	if m.Baseline != "none" {
		impls = append(impls, impl{"baseline-echo", func() (*reflectorUnderTest, error) { return m.startBaseline(e) }})
	}
	if m.ef.Binary != "" {
		impls = append(impls, impl{"llama_exporter", func() (*reflectorUnderTest, error) { return m.startExporter(e, "") }})
	}
	if m.CompareArgs != "" {
		impls = append(impls, impl{"llama_exporter+", func() (*reflectorUnderTest, error) { return m.startExporter(e, m.CompareArgs) }})
	}
	var baseRates, realRates []float64
	var cmp compareRuns
	for round := 1; round <= m.Rounds; round++ {
		var base *reflResult
		order := slices.Clone(impls)
		if m.CompareArgs != "" && round%2 == 0 {
			// ABBA: neither variant always runs first.
			n := len(order)
			order[n-2], order[n-1] = order[n-1], order[n-2]
		}
		for _, im := range order {
			logf("round %d: starting %s", round, im.name)
			r, err := im.start()
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			res, err := m.measure(e, im.name, r)
			r.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			res.Round = round
			m.report(e, res, base)
			switch im.name {
			case "baseline-echo":
				base = res
				baseRates = append(baseRates, res.RepliesPerSec)
			case "llama_exporter":
				realRates = append(realRates, res.RepliesPerSec)
			}
			cmp.add(im.name, res)
		}
	}
	cmp.report(e)
	if m.Rounds > 1 && len(baseRates) > 0 && len(realRates) > 0 {
		b, r := report.Median(baseRates), report.Median(realRates)
		fmt.Fprintf(e.out, "reflector summary over %d rounds: median baseline %.0f replies/s, median llama_exporter %.0f replies/s, ratio %.2f\n", m.Rounds, b, r, r/b)
		report.JSONLine(e.out, map[string]any{"mode": "reflector", "impl": "summary", "rounds": m.Rounds,
			"baseline_replies_per_s_median": math.Round(b), "llama_exporter_replies_per_s_median": math.Round(r), "ratio": report.Round2(r / b)})
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(any)"
	}
	return s
}

// budget is how long one reflector lives at most: a safety limit for the
// echo subprocess in case the tool dies without killing it.
func (m *reflectorMode) budget() time.Duration {
	return m.Warmup + m.Duration + m.Drain + time.Minute
}

func (m *reflectorMode) startBaseline(e *env) (*reflectorUnderTest, error) {
	if m.Baseline == "inprocess" {
		return m.startInprocessEcho(e)
	}
	port, err := freeUDPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	c, err := e.sup.start("echo", m.CPUReflector, selfExe(), "echo", "--listen="+addr.String(), "--for="+m.budget().String())
	if err != nil {
		return nil, err
	}
	return m.ready(e, addr, gen.ReplyEcho, c)
}

// startExporter starts llama_exporter as the reflector under test, with
// the user's --exporter.args and then extra.
func (m *reflectorMode) startExporter(e *env, extra string) (*reflectorUnderTest, error) {
	port, err := freeUDPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	argv := append(m.ef.argv(
		"--reflector.listen-address="+addr.String(),
		"--web.listen-address=127.0.0.1:0",
		"--reflector.max-pps=0", "--reflector.max-pps-per-source=0",
	), strings.Fields(extra)...)
	c, err := e.sup.start("llama_exporter", m.CPUReflector, argv...)
	if err != nil {
		return nil, err
	}
	return m.ready(e, addr, gen.ReplySTAMP, c)
}

func (m *reflectorMode) ready(e *env, addr netip.AddrPort, kind gen.ReplyKind, c *child) (*reflectorUnderTest, error) {
	dead := func() error {
		if c.Exited() {
			return c.exitError()
		}
		return nil
	}
	r := &reflectorUnderTest{addr: addr, kind: kind, dead: dead, pid: c.PID,
		cpu:  func() (time.Duration, error) { return procmeter.ProcessCPU(c.PID) },
		stop: func() { e.sup.stop(c, 3*time.Second) }}
	if err := gen.WaitReflector(e.ctx, addr, kind, 10*time.Second, dead); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// startInprocessEcho runs the echo loop in a goroutine locked to an OS
// thread pinned to --cpu.reflector. Its CPU is that thread's.
func (m *reflectorMode) startInprocessEcho(e *env) (*reflectorUnderTest, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	// The echo goroutine needs a P of its own next to the generator's
	// (its thread is pinned elsewhere), while it runs.
	procs := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(procs + 1)
	tids := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		// The thread goes back to the pool afterwards (rather than exit,
		// which would fire the parent-death signal of any child it once
		// forked), so it gets the affinity it had back.
		var prev unix.CPUSet
		unix.SchedGetaffinity(0, &prev)
		defer unix.SchedSetaffinity(0, &prev)
		if m.CPUReflector != "" {
			cpus, _ := parseCPUList(m.CPUReflector)
			if err := unix.SchedSetaffinity(0, cpuSet(cpus)); err != nil {
				logf("inprocess echo: pinning: %v", err)
			}
		}
		tids <- unix.Gettid()
		echoLoop(conn)
	}()
	tid := <-tids
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	r := &reflectorUnderTest{addr: addr, kind: gen.ReplyEcho, inSelf: true,
		cpu:  func() (time.Duration, error) { return procmeter.ThreadCPU(tid) },
		dead: func() error { return nil },
		stop: func() { conn.Close(); <-done; runtime.GOMAXPROCS(procs) }}
	if err := gen.WaitReflector(e.ctx, addr, gen.ReplyEcho, 5*time.Second, nil); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// measure loads r with the closed-loop generator: --warmup, then the
// measured --duration, then the --drain of the probes still out. Its
// result is impl's, with the rates of the measured window.
func (m *reflectorMode) measure(e *env, impl string, r *reflectorUnderTest) (*reflResult, error) {
	g, err := gen.New(m.genConfig(r))
	if err != nil {
		return nil, err
	}
	var reflDrops0 uint64
	if r.pid != 0 {
		reflDrops0 = procmeter.ProcessUDPDrops(r.pid)
	}
	g.Start()
	if err := sleepCtx(e.ctx, m.Warmup); err != nil {
		g.Stop(0)
		return nil, err
	}
	w, err := m.measureWindow(e.ctx, g, r)
	if err != nil {
		g.Stop(0)
		return nil, err
	}
	genDrops := procmeter.ProcessUDPDrops(os.Getpid())
	if err := g.Stop(m.Drain); err != nil {
		return nil, err
	}
	reflDrops := int64(-1)
	if r.pid != 0 {
		reflDrops = int64(procmeter.ProcessUDPDrops(r.pid) - reflDrops0)
	}
	if err := r.dead(); err != nil {
		return nil, err
	}
	return w.result(impl, g, reflDrops, genDrops), nil
}

// genConfig is the generator's configuration for a load on r.
func (m *reflectorMode) genConfig(r *reflectorUnderTest) gen.Config {
	return gen.Config{Target: r.addr, Kind: r.kind, Sockets: m.Sockets, Window: m.Window,
		PacketSize: m.PacketSize, LossTimeout: m.LossTimeout, SampleEvery: m.SampleEvery, Poll: m.Generator == "poll", GSO: m.GSO,
		Rate: m.Rate}
}

// measuredWindow is the measured part of a run: the generator's totals at
// its start and end, its length, and the CPU used meanwhile.
type measuredWindow struct {
	t0, t1          gen.Totals
	elapsed         time.Duration
	reflCPU, genCPU *procmeter.CPUMeter
	machine         procmeter.MachineMeter
}

// measureWindow measures --duration of the generator g's load on r, with
// the generator sampling RTTs meanwhile. Its error is that of the wait,
// which ctx cuts short.
func (m *reflectorMode) measureWindow(ctx context.Context, g *gen.Generator, r *reflectorUnderTest) (*measuredWindow, error) {
	w := &measuredWindow{reflCPU: procmeter.NewCPUMeter(r.cpu), genCPU: procmeter.NewCPUMeter(generatorCPU(r))}
	w.t0 = g.Totals()
	start := time.Now()
	w.machine.Start()
	w.reflCPU.Start()
	w.genCPU.Start()
	g.Measure(true)
	err := sleepCtx(ctx, m.Duration)
	w.t1 = g.Totals()
	w.elapsed = time.Since(start)
	w.reflCPU.Stop()
	w.genCPU.Stop()
	w.machine.Stop()
	g.Measure(false)
	return w, err
}

// generatorCPU reads the CPU time of the generator: this process's, less
// that of r's thread when r runs in it.
func generatorCPU(r *reflectorUnderTest) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		self := procmeter.SelfCPU()
		if r.inSelf {
			t, err := r.cpu()
			return self - t, err
		}
		return self, nil
	}
}

// result is the run of impl on the stopped generator g: the rates and CPU
// of the window w, the totals of the whole run, and the RTTs sampled.
func (w *measuredWindow) result(impl string, g *gen.Generator, reflDrops int64, genDrops uint64) *reflResult {
	res := &reflResult{
		Impl: impl, Elapsed: w.elapsed,
		RepliesPerSec:  float64(w.t1.Received-w.t0.Received) / w.elapsed.Seconds(),
		SentPerSec:     float64(w.t1.Sent-w.t0.Sent) / w.elapsed.Seconds(),
		Total:          g.Totals(),
		ReflectorCPU:   w.reflCPU.Percent(),
		GeneratorCPU:   w.genCPU.Percent(),
		Machine:        w.machine,
		ReflectorDrops: reflDrops,
		GeneratorDrops: genDrops,
	}
	if calls := w.t1.RecvCalls - w.t0.RecvCalls; calls > 0 {
		empty := w.t1.EmptyRecvs - w.t0.EmptyRecvs
		res.EmptyRecvPct = 100 * float64(empty) / float64(calls)
		if calls > empty {
			res.AvgBatch = float64(w.t1.Received-w.t0.Received) / float64(calls-empty)
		}
	}
	rtts := g.SampledRTTs()
	res.RTTSamples = len(rtts)
	res.RTT = report.DurationQuantiles(rtts, 0.5, 0.99, 0.999)
	return res
}

func (m *reflectorMode) report(e *env, r *reflResult, base *reflResult) {
	ratio := math.NaN()
	if base != nil && base.RepliesPerSec > 0 {
		ratio = r.RepliesPerSec / base.RepliesPerSec
	}
	line := fmt.Sprintf("reflector %-15s round %d: %9.0f replies/s  sent %d received %d lost %d (%.4f%%) late %d dup %d stray %d  socket drops: reflector %s generator %d  rtt p50 %s p99 %s p99.9 %s  cpu: reflector %s generator %s",
		r.Impl, r.Round, r.RepliesPerSec, r.Total.Sent, r.Total.Received, r.lost(), 100*r.lossRatio(),
		r.Total.Late, r.Total.Dup, r.Total.Stray, dropsString(r.ReflectorDrops), r.GeneratorDrops,
		report.Seconds(r.RTT[0.5]), report.Seconds(r.RTT[0.99]), report.Seconds(r.RTT[0.999]),
		report.Percent(r.ReflectorCPU), report.Percent(r.GeneratorCPU))
	line += fmt.Sprintf(" (%.0f%% of its receive calls empty, %.1f replies per batch), reflector %.2f µs per reply; machine: %s", r.EmptyRecvPct, r.AvgBatch, r.cpuPerReply(), procmeter.FormatCPUUsage(r.Machine.Usage))
	if !math.IsNaN(ratio) {
		line += fmt.Sprintf("  ratio to baseline %.2f", ratio)
	}
	if m.Rate == 0 && r.ReflectorCPU >= 0 && r.ReflectorCPU < 90 {
		line += "  [reflector below 90% of its core: it was not the bottleneck, this rate is a lower bound (generator or other load on the machine)]"
	}
	fmt.Fprintln(e.out, line)
	report.JSONLine(e.out, map[string]any{
		"mode": "reflector", "impl": r.Impl, "round": r.Round,
		"sockets": m.Sockets, "window": m.Window, "packet_size": m.PacketSize,
		"cpu_reflector": m.CPUReflector, "cpu_generator": m.CPUGenerator,
		"duration_s":                  report.Round2(r.Elapsed.Seconds()),
		"replies_per_s":               math.Round(r.RepliesPerSec),
		"sent_per_s":                  math.Round(r.SentPerSec),
		"sent":                        r.Total.Sent,
		"received":                    r.Total.Received,
		"lost":                        r.lost(),
		"loss_ratio":                  r.lossRatio(),
		"late":                        r.Total.Late,
		"duplicates":                  r.Total.Dup,
		"stray":                       r.Total.Stray,
		"replaced":                    r.Total.TimedOut,
		"reflector_socket_drops":      nullIfNegative(r.ReflectorDrops),
		"generator_socket_drops":      r.GeneratorDrops,
		"gso":                         m.GSO,
		"machine_busy_pct":            r.Machine.JSON(),
		"rtt_p50_us":                  report.Micros(r.RTT[0.5]),
		"rtt_p99_us":                  report.Micros(r.RTT[0.99]),
		"rtt_p999_us":                 report.Micros(r.RTT[0.999]),
		"rtt_samples":                 r.RTTSamples,
		"reflector_cpu_pct":           report.Round2(r.ReflectorCPU),
		"reflector_cpu_us_per_reply":  report.Round2(r.cpuPerReply()),
		"rate":                        m.Rate,
		"generator_cpu_pct":           report.Round2(r.GeneratorCPU),
		"generator":                   m.Generator,
		"generator_empty_recv_pct":    report.Round2(r.EmptyRecvPct),
		"generator_replies_per_batch": report.Round2(r.AvgBatch),
		"ratio_to_baseline":           report.Round2(ratio),
	})
}

// cpuPerReply is the reflector's CPU per reply in µs; NaN when unknown.
func (r *reflResult) cpuPerReply() float64 {
	if r.ReflectorCPU < 0 || r.RepliesPerSec <= 0 {
		return math.NaN()
	}
	return r.ReflectorCPU / 100 / r.RepliesPerSec * 1e6
}

// compareRuns pairs each round's llama_exporter and llama_exporter+
// (--exporter.compare-args) runs.
type compareRuns struct {
	plain, plus []*reflResult
}

func (c *compareRuns) add(impl string, r *reflResult) {
	switch impl {
	case "llama_exporter":
		c.plain = append(c.plain, r)
	case "llama_exporter+":
		c.plus = append(c.plus, r)
	}
}

// report prints, per round and as medians, llama_exporter+'s replies/s
// and CPU per reply over llama_exporter's.
func (c *compareRuns) report(e *env) {
	n := min(len(c.plain), len(c.plus))
	if n == 0 {
		return
	}
	var rates, cpus []float64
	for i := range n {
		rates = append(rates, c.plus[i].RepliesPerSec/c.plain[i].RepliesPerSec)
		cpus = append(cpus, c.plus[i].cpuPerReply()/c.plain[i].cpuPerReply())
	}
	fmt.Fprintf(e.out, "reflector compare over %d rounds: llama_exporter+ / llama_exporter replies/s %s (median %.3f), CPU per reply %s (median %.3f)\n",
		n, fmtRatios(rates), report.Median(rates), fmtRatios(cpus), report.Median(cpus))
	report.JSONLine(e.out, map[string]any{"mode": "reflector", "impl": "compare", "rounds": n,
		"replies_ratio": jsonRatios(rates), "replies_ratio_median": round3(report.Median(rates)),
		"cpu_per_reply_ratio": jsonRatios(cpus), "cpu_per_reply_ratio_median": round3(report.Median(cpus))})
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// jsonRatios rounds v for JSON, with null for NaN.
func jsonRatios(v []float64) []any {
	out := make([]any, len(v))
	for i, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out[i] = round3(x)
		}
	}
	return out
}

func fmtRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(s, " ")
}

func dropsString(n int64) string {
	if n < 0 {
		return "n/a"
	}
	return fmt.Sprint(n)
}

func nullIfNegative(n int64) any {
	if n < 0 {
		return nil
	}
	return n
}
