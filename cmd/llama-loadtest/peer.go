//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

// peerResult is what a peer prober cost while probing the sessions'
// targets: its CPU over the measured period and what it counted.
type peerResult struct {
	cpu           *procmeter.CPUMeter
	sent, replies float64
}

// runPeer runs smokeping_prober, with --peer.smokeping, against the
// sessions' target addresses at the same interval, and prints what it
// cost; without the flag it returns nil.
func (r *sessionsRun) runPeer() (*peerResult, error) {
	m := r.m
	if m.PeerSmokeping == "" {
		return nil, nil
	}
	logf("peer: smokeping_prober pinging the %d targets every %v for %v", m.Sessions, m.Interval, m.Duration)
	res, err := m.smokeping(r.e)
	if err != nil {
		return nil, fmt.Errorf("peer smokeping_prober: %w", err)
	}
	fmt.Fprintf(r.e.out, "sessions peer, smokeping_prober, same targets and interval: CPU %.2fs = %s of one core; pings sent %.0f, replies %.0f\n",
		res.cpu.CPU.Seconds(), report.Percent(res.cpu.Percent()), res.sent, res.replies)
	return res, nil
}

// smokeping runs the smokeping_prober binary (privileged ICMP, one pinger
// per target) for a warm-up and then --duration, pinned like the exporter,
// and reads its CPU over the latter and its ping counters at the end.
func (m *sessionsMode) smokeping(e *env) (*peerResult, error) {
	const warm = 3 * time.Second
	webPort, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	web := fmt.Sprintf("127.0.0.1:%d", webPort)
	argv := []string{m.PeerSmokeping, "--privileged", "--ping.interval=" + m.Interval.String(),
		"--web.listen-address=" + web, "--log.level=warn"}
	for i := range m.Sessions {
		argv = append(argv, netip.MustParseAddrPort(sessionTarget(i, 1)).Addr().String())
	}
	c, err := e.sup.start("smokeping_prober", m.CPUExporter, argv...)
	if err != nil {
		return nil, err
	}
	defer e.sup.stop(c, 3*time.Second)
	if err := waitMetrics(e, c, "http://"+web+"/metrics", time.Minute); err != nil {
		return nil, err
	}
	meter, err := meterChild(e, c, warm, m.Duration)
	if err != nil {
		return nil, err
	}
	if c.Exited() {
		return nil, c.exitError()
	}
	if !meter.Available {
		return nil, errors.New("its CPU time could not be read")
	}
	mfs, _, err := report.Fetch(e.ctx, &http.Client{Timeout: 10 * time.Second}, "http://"+web+"/metrics")
	if err != nil {
		return nil, err
	}
	return &peerResult{cpu: meter, sent: mfs.Sum("smokeping_requests_total"),
		replies: mfs.Sum("smokeping_response_duration_seconds")}, nil
}

// waitMetrics polls url until it answers, the child exits or timeout
// passes: smokeping_prober serves HTTP only once it has set up every
// pinger, which takes seconds for a thousand targets.
func waitMetrics(e *env, c *child, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if c.Exited() {
			return c.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no answer on %s within %v: %w", c.Name, url, timeout, err)
		}
		if err := sleepCtx(e.ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// printPeer prints the exporter's CPU share over the peer's and adds both
// to the results.
func (r *sessionsRun) printPeer(s *steadyState, peer *peerResult, res map[string]any) {
	if peer == nil {
		return
	}
	toPeer := ratio(s.exp.CPU.Seconds()/s.elapsed.Seconds(), peer.cpu.CPU.Seconds()/peer.cpu.Wall.Seconds())
	fmt.Fprintf(r.e.out, "sessions exporter CPU / smokeping_prober CPU: %.3f\n", toPeer)
	res["peer"] = "smokeping_prober"
	res["peer_cpu_pct"] = report.Round2(peer.cpu.Percent())
	res["peer_sent"], res["peer_replies"] = peer.sent, peer.replies
	res["exporter_to_peer_cpu"] = report.Round2(toPeer)
}

// serveTCP accepts connections on 0.0.0.0:port and closes them at once,
// as the target of --prober=tcp, until the listener is closed.
func serveTCP(port int) (net.Listener, error) {
	l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed") {
					return
				}
				continue
			}
			c.Close()
		}
	}()
	return l, nil
}
