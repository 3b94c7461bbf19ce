//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

// env is what a load-test mode runs with.
type env struct {
	ctx context.Context
	sup *supervisor
	out io.Writer // summary lines and JSON lines
	dir string    // config files and child logs
}

// logf prints progress to stderr, so stdout holds only results.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s llama-loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// exporterFlags are the flags every mode that runs llama_exporter shares.
type exporterFlags struct {
	Binary string
	Args   string
}

func addExporterFlags(cmd *kingpin.CmdClause, ef *exporterFlags, required bool) {
	f := cmd.Flag("exporter.binary", "Path of the llama_exporter binary to test.")
	if required {
		f = f.Required()
	}
	f.StringVar(&ef.Binary)
	cmd.Flag("exporter.args", "Extra flags for llama_exporter, space separated, e.g. --exporter.args='--log.level=warn'.").StringVar(&ef.Args)
}

func (ef *exporterFlags) validate() error {
	if ef.Binary == "" {
		return nil
	}
	st, err := os.Stat(ef.Binary)
	if err != nil {
		return fmt.Errorf("--exporter.binary: %w", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("--exporter.binary: %s is not an executable file", ef.Binary)
	}
	return nil
}

// argv returns the exporter's command line: the binary, args, then the
// user's extra flags (last, so that they can override ours).
func (ef *exporterFlags) argv(args ...string) []string {
	return append(append([]string{ef.Binary}, args...), strings.Fields(ef.Args)...)
}

// validCPUFlag checks an optional --cpu.* flag.
func validCPUFlag(name, v string) error {
	if v == "" {
		return nil
	}
	cpus, err := parseCPUList(v)
	if err != nil {
		return fmt.Errorf("--%s: %w", name, err)
	}
	if err := checkCPUsOnline(cpus); err != nil {
		return fmt.Errorf("--%s: %w", name, err)
	}
	return nil
}

func run(args []string, stdout io.Writer) int {
	app := kingpin.New("llama-loadtest", "Load tests for llama_exporter: reflector throughput, probe sessions at scale, loopback RTT. See doc.go.")
	app.HelpFlag.Short('h')
	g := addGlobalFlags(app)
	modes := addModes(app)
	h := addHelperCmds(app)
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "llama-loadtest: %v\n", err)
		return 2
	}
	if code, ok := h.run(cmd, stdout); ok {
		return code
	}
	mode := modes[cmd]
	if err := mode.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "llama-loadtest %s: %v\n", cmd, err)
		return 2
	}
	return g.runMode(mode, stdout)
}

// globalFlags are the flags of every load-test mode: the limit on the
// run, what is kept of it, and the wait for an idle machine.
type globalFlags struct {
	timeout  time.Duration
	keepLogs bool
	waitIdle time.Duration
	idleBusy float64
}

func addGlobalFlags(app *kingpin.Application) *globalFlags {
	g := &globalFlags{}
	app.Flag("timeout", "Hard limit on the whole run; children are stopped when it passes.").Default("10m").DurationVar(&g.timeout)
	app.Flag("keep-logs", "Keep the temporary directory with the children's logs and config files.").BoolVar(&g.keepLogs)
	app.Flag("wait-idle", "On a shared machine: first wait up to this long for all CPUs to be less than --idle-busy busy (over 2 s), then start anyway.").Default("0s").DurationVar(&g.waitIdle)
	app.Flag("idle-busy", "Busy share (%) under which --wait-idle considers the machine idle.").Default("10").Float64Var(&g.idleBusy)
	return g
}

// loadTestMode is a load test: a subcommand that runs under a supervisor,
// with a temporary directory.
type loadTestMode interface {
	validate() error
	run(*env) error
}

// addModes adds the load-test subcommands and returns them by name.
func addModes(app *kingpin.Application) map[string]loadTestMode {
	refl := addReflectorCmd(app)
	sess := addSessionsCmd(app)
	rtt := addRTTCmd(app)
	return map[string]loadTestMode{
		refl.cmd.FullCommand(): refl,
		sess.cmd.FullCommand(): sess,
		rtt.cmd.FullCommand():  rtt,
	}
}

// helperCmds are the hidden subcommands, which the modes start as children:
// the baseline reflector and prober, the CPU burner, and pinning.
type helperCmds struct {
	echo, burn, plain, pin *kingpin.CmdClause

	echoListen    string
	echoFor       time.Duration
	burnFor       time.Duration
	plainPort     int
	plainTargets  int
	plainFlows    int
	plainInterval time.Duration
	plainFor      time.Duration
	pinCPUs       string
	pinArgv       []string
}

func addHelperCmds(app *kingpin.Application) *helperCmds {
	h := &helperCmds{}
	h.echo = app.Command("echo", "Plain UDP echo loop (the baseline reflector).").Hidden()
	h.echo.Flag("listen", "host:port to listen on.").Required().StringVar(&h.echoListen)
	h.echo.Flag("for", "Exit after this long.").Default("15m").DurationVar(&h.echoFor)
	h.burn = app.Command("burn", "Busy-loop on one CPU.").Hidden()
	h.burn.Flag("for", "Exit after this long.").Default("15m").DurationVar(&h.burnFor)
	h.plain = app.Command("plain-prober", "Per-packet Go UDP prober (the exporter's baseline in sessions mode).").Hidden()
	h.plain.Flag("port", "Reflector port on the session targets.").Required().IntVar(&h.plainPort)
	h.plain.Flag("targets", "Targets 127.1.0.1.. (as in sessions mode).").Required().IntVar(&h.plainTargets)
	h.plain.Flag("flows", "Sockets.").Default("8").IntVar(&h.plainFlows)
	h.plain.Flag("interval", "Time between two probes of one target.").Default("1s").DurationVar(&h.plainInterval)
	h.plain.Flag("for", "Probe this long, then drain for a second and report.").Required().DurationVar(&h.plainFor)
	h.pin = app.Command("pin", "Run a command pinned to CPUs (when taskset is missing).").Hidden()
	h.pin.Flag("cpus", "CPU list.").Required().StringVar(&h.pinCPUs)
	h.pin.Arg("command", "Command and arguments.").Required().StringsVar(&h.pinArgv)
	return h
}

// run runs cmd if it is a hidden helper, with no supervisor and no
// temporary directory, and returns its exit code; ok is false for any
// other command.
func (h *helperCmds) run(cmd string, stdout io.Writer) (code int, ok bool) {
	switch cmd {
	case h.echo.FullCommand():
		if err := runEcho(h.echoListen, h.echoFor); err != nil {
			fmt.Fprintf(os.Stderr, "llama-loadtest echo: %v\n", err)
			return 1, true
		}
		return 0, true
	case h.plain.FullCommand():
		if err := runPlainProber(stdout, h.plainPort, h.plainTargets, h.plainFlows, h.plainInterval, h.plainFor); err != nil {
			fmt.Fprintf(os.Stderr, "llama-loadtest plain-prober: %v\n", err)
			return 1, true
		}
		return 0, true
	case h.burn.FullCommand():
		runBurn(h.burnFor)
		return 0, true
	case h.pin.FullCommand():
		err := runPinned(h.pinCPUs, h.pinArgv)
		fmt.Fprintf(os.Stderr, "llama-loadtest pin: %v\n", err)
		return 1, true
	}
	return 0, false
}

// runMode runs mode until it ends, --timeout passes or a signal comes,
// stops the children it started, and returns the exit code. Its logs and
// config files are kept when it fails or --keep-logs asks.
func (g *globalFlags) runMode(mode loadTestMode, stdout io.Writer) int {
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "llama-loadtest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "llama-loadtest: %v\n", err)
		return 1
	}
	sup := newSupervisor(dir)
	watchdog := g.startWatchdog(sup)
	defer watchdog.Stop()

	if g.waitIdle > 0 {
		waitForIdle(ctx, g.waitIdle, g.idleBusy)
	}
	err = mode.run(&env{ctx: ctx, sup: sup, out: stdout, dir: dir})
	sup.stopAll()
	code := g.exitCode(ctx, err)
	if g.keepLogs || code != 0 {
		logf("logs and config files kept in %s", dir)
	} else {
		os.RemoveAll(dir)
	}
	return code
}

// startWatchdog is the last resort if a mode ignores the context: 15 s
// after --timeout it stops the children and exits 3.
func (g *globalFlags) startWatchdog(sup *supervisor) *time.Timer {
	return time.AfterFunc(g.timeout+15*time.Second, func() {
		logf("watchdog: run exceeded --timeout=%v, killing children", g.timeout)
		sup.stopAll()
		os.Exit(3)
	})
}

// exitCode logs how a mode that returned err ended and returns the exit
// code: 0, 130 when a signal interrupted it, else 1 (--timeout included).
func (g *globalFlags) exitCode(ctx context.Context, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		logf("interrupted: %v", err)
		return 130
	case errors.Is(err, context.DeadlineExceeded):
		logf("--timeout=%v reached: %v", g.timeout, err)
		return 1
	default:
		logf("error: %v", err)
		return 1
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runEcho is the baseline reflector: a per-packet UDP echo loop in one
// goroutine, like Dropbox LLAMA's reflector (one read and one write system
// call per packet, no batching, no control messages).
func runEcho(listen string, d time.Duration) error {
	addr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("echo listening on %s\n", conn.LocalAddr())
	time.AfterFunc(d, func() { conn.Close() })
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; conn.Close() }()
	err = echoLoop(conn)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func echoLoop(conn *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if _, err := conn.WriteToUDPAddrPort(buf[:n], from); err != nil && errors.Is(err, net.ErrClosed) {
			return err
		}
	}
}

// runBurn spins one CPU until d has passed.
func runBurn(d time.Duration) {
	runtime.GOMAXPROCS(1)
	end := time.Now().Add(d)
	x := uint64(1)
	for {
		for range 1 << 22 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if time.Now().After(end) {
			break
		}
	}
	if x == 42 { // keep the loop from being optimised away
		fmt.Println(x)
	}
}

// waitForIdle waits up to limit for every CPU to be less than busyPct busy
// over a 2 s sample.
func waitForIdle(ctx context.Context, limit time.Duration, busyPct float64) {
	end := time.Now().Add(limit)
	for {
		var m procmeter.MachineMeter
		m.Start()
		if sleepCtx(ctx, 2*time.Second) != nil {
			return
		}
		m.Stop()
		worst := 0.0
		for _, u := range m.Usage {
			worst = max(worst, u.Busy)
		}
		if worst < busyPct {
			logf("machine idle enough: %s", procmeter.FormatCPUUsage(m.Usage))
			return
		}
		if time.Now().After(end) {
			logf("machine still busy after --wait-idle=%v (%s); starting anyway", limit, procmeter.FormatCPUUsage(m.Usage))
			return
		}
		logf("waiting for an idle machine: %s", procmeter.FormatCPUUsage(m.Usage))
		if sleepCtx(ctx, 3*time.Second) != nil {
			return
		}
	}
}
