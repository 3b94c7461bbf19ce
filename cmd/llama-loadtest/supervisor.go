//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"golang.org/x/sys/unix"
)

// meterChild waits warm for child c to settle, then measures its CPU over
// d. The error is the context's, when the run is cancelled meanwhile.
func meterChild(e *env, c *child, warm, d time.Duration) (*procmeter.CPUMeter, error) {
	if err := sleepCtx(e.ctx, warm); err != nil {
		return nil, err
	}
	meter := procmeter.NewCPUMeter(func() (time.Duration, error) { return procmeter.ProcessCPU(c.PID) })
	meter.Start()
	err := sleepCtx(e.ctx, d)
	meter.Stop()
	if err != nil {
		return nil, err
	}
	return meter, nil
}

// parseCPUList parses a CPU list as taskset -c takes it ("1", "0,2",
// "0-3") into sorted, distinct CPU numbers.
func parseCPUList(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty CPU list")
	}
	seen := map[int]bool{}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("CPU list %q: bad CPU %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("CPU list %q: bad range %q", s, part)
			}
		}
		if b >= 1024 {
			return nil, fmt.Errorf("CPU list %q: CPU %d out of range", s, b)
		}
		for c := a; c <= b; c++ {
			seen[c] = true
		}
	}
	out := make([]int, 0, len(seen))
	for c := range 1024 {
		if seen[c] {
			out = append(out, c)
		}
	}
	return out, nil
}

// checkCPUsOnline reports an error if a CPU of the list is not usable by
// this process.
func checkCPUsOnline(cpus []int) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return err
	}
	for _, c := range cpus {
		if !set.IsSet(c) {
			return fmt.Errorf("CPU %d is not available to this process (have %d CPUs)", c, set.Count())
		}
	}
	return nil
}

func cpuSet(cpus []int) *unix.CPUSet {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return &set
}

// pinSelf pins every thread of this process to cpus, and sets GOMAXPROCS to
// their number. Threads created later inherit the affinity of their
// creator, which is pinned by then.
func pinSelf(cpus []int) error {
	set := cpuSet(cpus)
	for range 2 { // a second pass catches threads started during the first
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pinning thread %d: %w", tid, err)
			}
		}
	}
	runtime.GOMAXPROCS(len(cpus))
	return nil
}

var (
	tasksetOnce sync.Once
	tasksetPath string
)

// pinnedArgv returns argv wrapped so that the program runs on cpus: with
// taskset -c (util-linux) when it is installed, otherwise with this tool's
// hidden "pin" subcommand, which sets its own affinity and execs argv. Both
// exec in place, so the child's PID is the program's PID.
func pinnedArgv(cpus string, argv []string) []string {
	if cpus == "" {
		return argv
	}
	tasksetOnce.Do(func() { tasksetPath, _ = exec.LookPath("taskset") })
	if tasksetPath != "" {
		return append([]string{tasksetPath, "-c", cpus}, argv...)
	}
	return append([]string{selfExe(), "pin", "--cpus=" + cpus, "--"}, argv...)
}

func selfExe() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}

// runPinned is the hidden "pin" subcommand: set this thread's affinity and
// exec argv; the new program's threads inherit it.
func runPinned(cpus string, argv []string) error {
	list, err := parseCPUList(cpus)
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		return errors.New("pin: no command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, cpuSet(list)); err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	return syscall.Exec(path, argv, os.Environ())
}

// child is a process the tool started.
type child struct {
	Name string
	PID  int
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Exited reports whether the process has ended.
func (c *child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitError describes how the child ended, with the tail of its log.
func (c *child) exitError() error {
	return fmt.Errorf("%s (pid %d) exited: %v; last log lines:\n%s", c.Name, c.PID, c.err, tail(c.Log, 8))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// supervisor starts child processes, each in its own process group with a
// parent-death signal (so that they die with the tool even if it is
// SIGKILLed), logs their output to files in dir, and stops them all on
// stopAll.
type supervisor struct {
	dir      string
	mu       sync.Mutex
	children []*child
	stopped  bool
}

func newSupervisor(dir string) *supervisor { return &supervisor{dir: dir} }

// start runs argv (pinned to cpus unless cpus is empty) as child name.
func (s *supervisor) start(name, cpus string, argv ...string) (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errors.New("shutting down")
	}
	logPath := filepath.Join(s.dir, fmt.Sprintf("%02d-%s.log", len(s.children), name))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv = pinnedArgv(cpus, argv)
	fmt.Fprintf(logf, "# %s\n", strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{Name: name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	s.children = append(s.children, c)
	return c, nil
}

// stop ends one child: SIGTERM to its process group, SIGKILL after grace.
func (s *supervisor) stop(c *child, grace time.Duration) {
	if c.Exited() {
		return
	}
	syscall.Kill(-c.PID, syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	syscall.Kill(-c.PID, syscall.SIGKILL)
	<-c.done
}

// stopAll stops every child, newest first, and refuses new ones.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	s.stopped = true
	cs := append([]*child(nil), s.children...)
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		s.stop(cs[i], 3*time.Second)
	}
}

// freeUDPPort returns a UDP port that is free on host at the time of the
// call.
func freeUDPPort(host string) (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// freeTCPPort returns a TCP port that is free on 127.0.0.1.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTPReady polls http://addr/-/ready until it answers 200, the child
// exits, or timeout passes.
func waitHTTPReady(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/-/ready", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if c.Exited() {
			return c.exitError()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready on %s within %v (last error: %v)", c.Name, addr, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
