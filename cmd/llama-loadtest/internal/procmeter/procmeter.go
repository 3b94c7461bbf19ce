//go:build linux

// Package procmeter is the load tool's meter of processes and CPUs, read
// from /proc: a process's or thread's CPU time and memory, the CPU share
// it used over a period, every CPU's busy share, and the receive-buffer
// drops of a process's UDP sockets.
package procmeter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/procnet"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel exports it as a
// fixed ABI value, independent of CONFIG_HZ).
const clockTicks = 100

// Stat holds the fields of /proc/PID/stat the tool uses.
type Stat struct {
	UTime, STime uint64 // clock ticks
	Threads      int
}

// CPU returns the user plus system CPU time.
func (s Stat) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * time.Second / clockTicks
}

// parseProcStat parses the contents of /proc/PID/stat (or
// /proc/PID/task/TID/stat). The command name, field 2, is in parentheses
// and may itself contain spaces and parentheses, so fields are counted from
// the last ')'.
func parseProcStat(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	const utime, stime, threads = 14 - 3, 15 - 3, 20 - 3
	if len(f) <= threads {
		return Stat{}, fmt.Errorf("proc stat: %d fields after the command name, need more than %d", len(f), threads)
	}
	var s Stat
	var err error
	if s.UTime, err = strconv.ParseUint(f[utime], 10, 64); err != nil {
		return Stat{}, fmt.Errorf("proc stat: utime: %w", err)
	}
	if s.STime, err = strconv.ParseUint(f[stime], 10, 64); err != nil {
		return Stat{}, fmt.Errorf("proc stat: stime: %w", err)
	}
	if s.Threads, err = strconv.Atoi(f[threads]); err != nil {
		return Stat{}, fmt.Errorf("proc stat: num_threads: %w", err)
	}
	return s, nil
}

// Mem holds the memory lines of /proc/PID/status, in bytes.
type Mem struct {
	RSS, HWM uint64 // VmRSS, VmHWM (peak RSS)
}

// parseProcStatus extracts VmRSS and VmHWM from /proc/PID/status. Both are
// given in kB by the kernel.
func parseProcStatus(b []byte) (Mem, error) {
	var m Mem
	var haveRSS bool
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return Mem{}, fmt.Errorf("proc status: malformed %s line %q", key, line)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("proc status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS, haveRSS = n*1024, true
		} else {
			m.HWM = n * 1024
		}
	}
	if !haveRSS {
		return Mem{}, errors.New("proc status: no VmRSS line (a kernel thread or a zombie?)")
	}
	return m, nil
}

// ReadStat reads and parses a /proc/PID/stat or /proc/PID/task/TID/stat
// file.
func ReadStat(path string) (Stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	return parseProcStat(b)
}

// ProcessCPU is the CPU time of process pid so far.
func ProcessCPU(pid int) (time.Duration, error) {
	s, err := ReadStat(fmt.Sprintf("/proc/%d/stat", pid))
	return s.CPU(), err
}

// ThreadCPU is the CPU time of thread tid of this process so far.
func ThreadCPU(tid int) (time.Duration, error) {
	s, err := ReadStat(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	return s.CPU(), err
}

// SelfCPU is this process's CPU time, with getrusage's microsecond
// resolution.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessMem reads the memory of process pid from /proc/PID/status.
func ProcessMem(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	return parseProcStatus(b)
}

// CPUMeter measures the CPU a process (or thread) uses between start and
// stop, as a percentage of one core over the wall-clock time between them.
type CPUMeter struct {
	read      func() (time.Duration, error)
	cpu0      time.Duration
	wall0     time.Time
	err       error
	CPU       time.Duration
	Wall      time.Duration
	Available bool
}

// NewCPUMeter returns a meter of the CPU time that read returns.
func NewCPUMeter(read func() (time.Duration, error)) *CPUMeter {
	return &CPUMeter{read: read}
}

// Start takes the first reading.
func (m *CPUMeter) Start() {
	if m == nil {
		return
	}
	m.wall0 = time.Now()
	m.cpu0, m.err = m.read()
}

// Stop takes the second reading and sets CPU, Wall and Available.
func (m *CPUMeter) Stop() {
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
func (m *CPUMeter) Percent() float64 {
	if m == nil || !m.Available || m.Wall <= 0 {
		return -1
	}
	return 100 * m.CPU.Seconds() / m.Wall.Seconds()
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

// readCPUStat reads and parses /proc/stat.
func readCPUStat() (map[int]cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUStat(b)
}

// CPUUsage is how busy each CPU was between two /proc/stat readings.
type CPUUsage struct {
	CPU         int
	Busy, Steal float64 // % of the interval
}

// cpuUsageBetween is each CPU's busy share between readings a and b.
func cpuUsageBetween(a, b map[int]cpuTimes) []CPUUsage {
	var out []CPUUsage
	for c := range len(b) + 64 {
		x, ok1 := a[c]
		y, ok2 := b[c]
		if !ok1 || !ok2 || y.Total <= x.Total {
			continue
		}
		total := float64(y.Total - x.Total)
		out = append(out, CPUUsage{CPU: c,
			Busy:  100 * (total - float64(y.Idle-x.Idle)) / total,
			Steal: 100 * float64(y.Steal-x.Steal) / total})
	}
	return out
}

// FormatCPUUsage formats us as "cpuN B% busy (steal S%)" items, comma
// separated.
func FormatCPUUsage(us []CPUUsage) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("cpu%d %.0f%% busy (steal %.1f%%)", u.CPU, u.Busy, u.Steal))
	}
	return strings.Join(parts, ", ")
}

// MachineMeter measures every CPU's busy share over a period, to tell how
// much the machine did besides the processes under test.
type MachineMeter struct {
	a     map[int]cpuTimes
	Usage []CPUUsage
}

// Start takes the first reading of /proc/stat.
func (m *MachineMeter) Start() { m.a, _ = readCPUStat() }

// Stop takes the second reading and sets Usage.
func (m *MachineMeter) Stop() {
	if b, err := readCPUStat(); err == nil && m.a != nil {
		m.Usage = cpuUsageBetween(m.a, b)
	}
}

// JSON returns the busy percentages keyed "cpuN".
func (m *MachineMeter) JSON() map[string]float64 {
	out := map[string]float64{}
	for _, u := range m.Usage {
		out[fmt.Sprintf("cpu%d", u.CPU)] = math.Round(u.Busy*100) / 100
	}
	return out
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

// ProcessUDPDrops is the sum of the receive-buffer drops of the UDP
// sockets process pid has open now (sockets closed earlier are not
// counted; the system-wide counters of /proc/net/snmp would include other
// processes).
func ProcessUDPDrops(pid int) uint64 {
	inodes := socketInodes(pid)
	var sum uint64
	for _, s := range procnet.ReadUDP() {
		if inodes[s.Inode] {
			sum += s.Drops
		}
	}
	return sum
}
