//go:build linux

package main

import (
	"bytes"
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

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel exports it as a
// fixed ABI value, independent of CONFIG_HZ).
const clockTicks = 100

// procStat holds the fields of /proc/PID/stat the tool uses.
type procStat struct {
	UTime, STime uint64 // clock ticks
	Threads      int
}

// CPU returns the user plus system CPU time.
func (s procStat) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * time.Second / clockTicks
}

// parseProcStat parses the contents of /proc/PID/stat (or
// /proc/PID/task/TID/stat). The command name, field 2, is in parentheses
// and may itself contain spaces and parentheses, so fields are counted from
// the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	const utime, stime, threads = 14 - 3, 15 - 3, 20 - 3
	if len(f) <= threads {
		return procStat{}, fmt.Errorf("proc stat: %d fields after the command name, need more than %d", len(f), threads)
	}
	var s procStat
	var err error
	if s.UTime, err = strconv.ParseUint(f[utime], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat: utime: %w", err)
	}
	if s.STime, err = strconv.ParseUint(f[stime], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat: stime: %w", err)
	}
	if s.Threads, err = strconv.Atoi(f[threads]); err != nil {
		return procStat{}, fmt.Errorf("proc stat: num_threads: %w", err)
	}
	return s, nil
}

// procMem holds the memory lines of /proc/PID/status, in bytes.
type procMem struct {
	RSS, HWM uint64 // VmRSS, VmHWM (peak RSS)
}

// parseProcStatus extracts VmRSS and VmHWM from /proc/PID/status. Both are
// given in kB by the kernel.
func parseProcStatus(b []byte) (procMem, error) {
	var m procMem
	var haveRSS bool
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("proc status: malformed %s line %q", key, line)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("proc status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS, haveRSS = n*1024, true
		} else {
			m.HWM = n * 1024
		}
	}
	if !haveRSS {
		return procMem{}, errors.New("proc status: no VmRSS line (a kernel thread or a zombie?)")
	}
	return m, nil
}

func readProcStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// processCPU is the CPU time of process pid so far.
func processCPU(pid int) (time.Duration, error) {
	s, err := readProcStat(fmt.Sprintf("/proc/%d/stat", pid))
	return s.CPU(), err
}

// threadCPU is the CPU time of thread tid of this process so far.
func threadCPU(tid int) (time.Duration, error) {
	s, err := readProcStat(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	return s.CPU(), err
}

// selfCPU is this process's CPU time, with getrusage's microsecond
// resolution.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func processMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	return parseProcStatus(b)
}

// cpuMeter measures the CPU a process (or thread) uses between start and
// stop, as a percentage of one core over the wall-clock time between them.
type cpuMeter struct {
	read      func() (time.Duration, error)
	cpu0      time.Duration
	wall0     time.Time
	err       error
	CPU       time.Duration
	Wall      time.Duration
	Available bool
}

func newCPUMeter(read func() (time.Duration, error)) *cpuMeter {
	return &cpuMeter{read: read}
}

func (m *cpuMeter) start() {
	if m == nil {
		return
	}
	m.wall0 = time.Now()
	m.cpu0, m.err = m.read()
}

func (m *cpuMeter) stop() {
	if m == nil {
		return
	}
	c, err := m.read()
	m.Wall = time.Since(m.wall0)
	if m.err == nil && err == nil {
		m.CPU, m.Available = c-m.cpu0, true
	}
}

// Percent is the CPU used as a percentage of one core; -1 when unknown.
func (m *cpuMeter) Percent() float64 {
	if m == nil || !m.Available || m.Wall <= 0 {
		return -1
	}
	return 100 * m.CPU.Seconds() / m.Wall.Seconds()
}

// meterChild waits warm for child c to settle, then measures its CPU over
// d. The error is the context's, when the run is cancelled meanwhile.
func meterChild(e *env, c *child, warm, d time.Duration) (*cpuMeter, error) {
	if err := sleepCtx(e.ctx, warm); err != nil {
		return nil, err
	}
	meter := newCPUMeter(func() (time.Duration, error) { return processCPU(c.PID) })
	meter.start()
	err := sleepCtx(e.ctx, d)
	meter.stop()
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

// cpuTimes are one CPU's counters from /proc/stat, in clock ticks.
type cpuTimes struct {
	Total, Idle, Steal uint64
}

// parseCPUStat parses the per-CPU lines ("cpu0 ...", not the "cpu" total)
// of /proc/stat. Idle includes iowait; Total includes steal.
func parseCPUStat(b []byte) (map[int]cpuTimes, error) {
	out := map[int]cpuTimes{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var t cpuTimes
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is already included in user and nice.
		for i := 1; i <= 8; i++ {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			t.Total += v
			switch i {
			case 4, 5:
				t.Idle += v
			case 8:
				t.Steal = v
			}
		}
		out[n] = t
	}
	if len(out) == 0 {
		return nil, errors.New("/proc/stat: no per-CPU lines")
	}
	return out, nil
}

func readCPUStat() (map[int]cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUStat(b)
}

// cpuUsage is how busy each CPU was between two /proc/stat readings.
type cpuUsage struct {
	CPU         int
	Busy, Steal float64 // % of the interval
}

func cpuUsageBetween(a, b map[int]cpuTimes) []cpuUsage {
	var out []cpuUsage
	for c := range len(b) + 64 {
		x, ok1 := a[c]
		y, ok2 := b[c]
		if !ok1 || !ok2 || y.Total <= x.Total {
			continue
		}
		total := float64(y.Total - x.Total)
		out = append(out, cpuUsage{CPU: c,
			Busy:  100 * (total - float64(y.Idle-x.Idle)) / total,
			Steal: 100 * float64(y.Steal-x.Steal) / total})
	}
	return out
}

func fmtCPUUsage(us []cpuUsage) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("cpu%d %.0f%% busy (steal %.1f%%)", u.CPU, u.Busy, u.Steal))
	}
	return strings.Join(parts, ", ")
}

// machineMeter measures every CPU's busy share over a period, to tell how
// much the machine did besides the processes under test.
type machineMeter struct {
	a     map[int]cpuTimes
	Usage []cpuUsage
}

func (m *machineMeter) start() { m.a, _ = readCPUStat() }

func (m *machineMeter) stop() {
	if b, err := readCPUStat(); err == nil && m.a != nil {
		m.Usage = cpuUsageBetween(m.a, b)
	}
}

// JSON returns the busy percentages keyed "cpuN".
func (m *machineMeter) JSON() map[string]float64 {
	out := map[string]float64{}
	for _, u := range m.Usage {
		out[fmt.Sprintf("cpu%d", u.CPU)] = round2(u.Busy)
	}
	return out
}

// udpSock is one line of /proc/net/udp.
type udpSock struct {
	Port  int
	Inode uint64
	Drops uint64
}

// parseProcNetUDP parses /proc/net/udp (or udp6): local port, inode and
// the "drops" column (datagrams dropped because the receive buffer was
// full) of every socket.
func parseProcNetUDP(b []byte) ([]udpSock, error) {
	var out []udpSock
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 13 {
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("/proc/net/udp: bad local address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad port %q", portHex)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad inode %q", f[9])
		}
		drops, err := strconv.ParseUint(f[12], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: bad drops %q", f[12])
		}
		out = append(out, udpSock{Port: int(port), Inode: inode, Drops: drops})
	}
	return out, nil
}

// socketInodes returns the inodes of the sockets process pid has open.
func socketInodes(pid int) map[uint64]bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if v, ok := strings.CutPrefix(l, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

// processUDPDrops is the sum of the receive-buffer drops of the UDP
// sockets process pid has open now (sockets closed earlier are not
// counted; the system-wide counters of /proc/net/snmp would include other
// processes).
func processUDPDrops(pid int) uint64 {
	inodes := socketInodes(pid)
	var sum uint64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		socks, err := parseProcNetUDP(b)
		if err != nil {
			continue
		}
		for _, s := range socks {
			if inodes[s.Inode] {
				sum += s.Drops
			}
		}
	}
	return sum
}
