//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// plainProber is the exporter's in-run baseline in "sessions" mode, as the
// echo loop is the reflector's: the same STAMP probes to the same targets at
// the same rate, sent and received the plainest way Go offers. One
// WriteToUDPAddrPort per probe on a 5 ms tick, one ReadFromUDPAddrPort per
// reply, user-space timestamps, and no accounting but counts and an RTT sum.
// What it costs is what any Go prober pays on this host for these packets,
// so the exporter's CPU can be judged against it in the same run however
// fast the machine is that day.
type plainProber struct {
	targets  []netip.AddrPort
	interval time.Duration
	conns    []*net.UDPConn
	seq      []uint32 // per target: the reflector numbers each session

	sent, received atomic.Uint64
	rttSum         atomic.Int64 // ns, over received replies
	wg             sync.WaitGroup
}

// plainTick is how often the plain prober sends the probes that fell due,
// the exporter's scheduler tick.
const plainTick = 5 * time.Millisecond

// newPlainProber opens flows unconnected UDP sockets to probe targets
// (sessionTarget 0..n-1 on port) each once per interval.
func newPlainProber(port, n, flows int, interval time.Duration) (*plainProber, error) {
	p := &plainProber{interval: interval, seq: make([]uint32, n)}
	for i := range n {
		p.targets = append(p.targets, netip.MustParseAddrPort(sessionTarget(i, port)))
	}
	for range flows {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
		if err != nil {
			p.close()
			return nil, err
		}
		p.conns = append(p.conns, c)
	}
	return p, nil
}

func (p *plainProber) close() {
	for _, c := range p.conns {
		c.Close()
	}
	p.wg.Wait()
}

// run probes until ctx ends, then waits drain for the last replies.
func (p *plainProber) run(ctx context.Context, drain time.Duration) {
	for _, c := range p.conns {
		p.wg.Add(1)
		go p.receive(c)
	}
	var pkt stamp.SenderPacket
	buf := make([]byte, stamp.SenderPacketLen)
	start := time.Now()
	perSecond := float64(len(p.targets)) / p.interval.Seconds()
	next := 0 // probes sent so far; target next%len(targets) is due next
	t := time.NewTicker(plainTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			time.Sleep(drain)
			return
		case <-t.C:
		}
		due := int(time.Since(start).Seconds() * perSecond)
		for ; next < due; next++ {
			i := next % len(p.targets)
			p.seq[i]++
			pkt = stamp.SenderPacket{Sequence: p.seq[i], Timestamp: stamp.NewTimestamp(time.Now()), SSID: 1}
			pkt.MarshalTo(buf)
			if _, err := p.conns[i%len(p.conns)].WriteToUDPAddrPort(buf, p.targets[i]); err == nil {
				p.sent.Add(1)
			}
		}
	}
}

func (p *plainProber) receive(c *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, 2048)
	var r stamp.ReflectorPacket
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		if r.UnmarshalBinary(buf[:n]) != nil {
			continue
		}
		p.received.Add(1)
		p.rttSum.Add(int64(now.Sub(r.SenderTimestamp.Time())))
	}
}

// plainResultFormat is the plain prober's last output line, which the
// sessions mode reads back from its log.
const plainResultFormat = "plain-prober sent %d received %d rtt-sum-ns %d\n"

var plainResultRE = regexp.MustCompile(`plain-prober sent (\d+) received (\d+) rtt-sum-ns (-?\d+)`)

// runPlainProber is the hidden "plain-prober" subcommand: it probes for d
// (or until SIGTERM), drains for a second, and prints plainResultFormat.
func runPlainProber(out io.Writer, port, n, flows int, interval, d time.Duration) error {
	switch {
	case port < 1 || port > 65535:
		return fmt.Errorf("--port=%d: want 1..65535", port)
	case n < 1 || n > maxSessions:
		return fmt.Errorf("--targets=%d: want 1..%d", n, maxSessions)
	case flows < 1 || flows > 1024:
		return fmt.Errorf("--flows=%d: want 1..1024", flows)
	case interval < time.Millisecond:
		return fmt.Errorf("--interval=%v: want at least 1ms", interval)
	case d <= 0:
		return fmt.Errorf("--for=%v: want more than 0", d)
	}
	p, err := newPlainProber(port, n, flows, interval)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	p.run(ctx, time.Second)
	p.close()
	fmt.Fprintf(out, plainResultFormat, p.sent.Load(), p.received.Load(), p.rttSum.Load())
	return nil
}

// plainResult is what a plain prober's log reports.
type plainResult struct {
	sent, received uint64
	meanRTT        time.Duration
}

// parsePlainResult reads the last result line of a plain prober's log.
func parsePlainResult(log []byte) (plainResult, error) {
	all := plainResultRE.FindAllSubmatch(log, -1)
	if len(all) == 0 {
		return plainResult{}, errors.New("plain prober: no result line in its log")
	}
	m := all[len(all)-1]
	var r plainResult
	r.sent, _ = strconv.ParseUint(string(m[1]), 10, 64)
	r.received, _ = strconv.ParseUint(string(m[2]), 10, 64)
	sum, _ := strconv.ParseInt(string(m[3]), 10, 64)
	if r.received > 0 {
		r.meanRTT = time.Duration(sum / int64(r.received))
	}
	return r, nil
}
