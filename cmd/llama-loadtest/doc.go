//go:build linux

// Command llama-loadtest measures llama_exporter at scale on one Linux
// machine, over loopback only: how many STAMP probes its reflector answers
// per second on one core (against a plain Go UDP echo loop as the in-run
// baseline), what N continuous probe sessions cost the exporter in CPU,
// memory and /probe latency, and the RTT quantiles the exporter reports
// over loopback, with or without CPU-bound neighbours.
//
// Build both binaries, then run a mode:
//
//	go build -o /tmp/le /work/main
//	go build -o /tmp/llama-loadtest ./cmd/llama-loadtest
//
//	llama-loadtest reflector --exporter.binary=/tmp/le [--duration=10s] [--rounds=3]
//	llama-loadtest sessions  --exporter.binary=/tmp/le --sessions=10000 [--interval=1s] [--duration=30s]
//	llama-loadtest rtt       --exporter.binary=/tmp/le [--probes=10000] [--burners=2]
//
// Every mode prints human-readable lines starting with the mode's name
// ("#" lines describe the setup), then one JSON object per result on a
// line of its own (grep '^{'), with the same figures, for the README.
// Progress goes to stderr. --timeout (default 10m) bounds the whole run;
// children (exporters, echo, burners) run in their own process groups with
// a parent-death signal and are stopped on exit, on error, on SIGINT /
// SIGTERM, and even if the tool is killed. Their logs and the generated
// config files live in a temporary directory that is removed on success
// (--keep-logs keeps it). Needs Linux (/proc, sched_setaffinity,
// recvmmsg/sendmmsg, UDP GSO); taskset (util-linux) is used when installed.
//
// On a machine shared with other work, --wait-idle=5m first waits (up to
// that long) for every CPU to be under --idle-busy percent busy; every
// result also reports how busy each CPU was while it was measured (and the
// hypervisor's steal time), so contaminated figures can be recognised.
//
// # reflector
//
// Closed loop: K sockets (--sockets, default 4) each keep W probes
// (--window, default 32) of --packet-size octets (44, the STAMP minimum)
// outstanding; every reply triggers the next probe. After --warmup the
// replies are counted for --duration; then sending stops and outstanding
// replies are awaited for --drain; what is still missing is lost. A probe
// unanswered after --loss-timeout is replaced, so that a loss does not
// shrink the window (a reply that still comes counts as late).
//
// Two reflectors are measured one after the other, each alone on the
// machine with the same load:
//
//   - baseline-echo: a per-packet Go echo loop, ReadFromUDPAddrPort and
//     WriteToUDPAddrPort in one goroutine, like Dropbox LLAMA's reflector.
//     --baseline=process (default) runs it as this tool's hidden "echo"
//     subcommand, pinned like the real one; --baseline=inprocess runs it
//     on a goroutine locked to a thread pinned to --cpu.reflector (cheaper
//     to set up, but every packet then crosses threads inside one Go
//     runtime, which makes the baseline slower: prefer process);
//     --baseline=none skips it.
//   - llama_exporter: --exporter.binary run with
//     --reflector.listen-address=127.0.0.1:PORT
//     --web.listen-address=127.0.0.1:0 --reflector.max-pps=0
//     --reflector.max-pps-per-source=0, plus --exporter.args.
//
// Each reflector is pinned to --cpu.reflector (default CPU 1, with
// taskset -c, or this tool's hidden "pin" subcommand when taskset is
// missing) and the generator, this process, to --cpu.generator (default
// CPU 0, GOMAXPROCS 1), so the comparison is "on one core". The generator
// is built to outrun the reflector: recvmmsg/sendmmsg on pre-built message
// vectors, and each refill sent as one UDP GSO write (--gso, default on).
// Loopback hands such a train over as it is: a socket without UDP_GRO
// (the baseline echo) receives it one datagram per probe, one with UDP_GRO
// (llama_exporter's reflector) as one buffer, as it would after GRO on a
// NIC when a sender's probes come back to back. --no-gso sends every probe
// on its own, which takes the generator's CPU first. --generator=poll
// busy-polls instead of sleeping in the netpoller.
//
// Output per reflector: replies/s over the measured period, sent,
// received, lost (and ratio), late, duplicated and stray replies,
// receive-buffer drops of the reflector's and the generator's sockets,
// RTT p50/p99/p99.9 of sampled replies (queueing dominated: about K*W /
// rate), the CPU of the reflector and of the generator in % of one core,
// how busy each CPU of the machine was, and for llama_exporter the ratio
// to the baseline. Trust a rate only when the reflector's CPU is near
// 100%: below 90% the line says that it was not the bottleneck. With
// --rounds=N the two alternate N times and a summary line gives the
// medians, which helps on a machine shared with other work.
//
// --rate=R opens the loop: a token bucket (golang.org/x/time/rate, burst
// --sockets times --window) caps the probes sent per second over all sockets, for a load
// below the reflector's capacity; the window then only bounds the probes
// outstanding. --exporter.compare-args='FLAGS' measures a second
// llama_exporter, with FLAGS added (llama_exporter+), next to the first in
// every round (after it in odd rounds, before it in even ones), and a last
// line gives, per round and as a median, its replies/s and its reflector
// CPU per reply over the first's: the cost of an option, such as
// --collector.host-drops, in one run.
//
// # sessions
//
// Starts a reflector (--reflector=separate, default: a second
// llama_exporter with only its reflector in use, bound to 0.0.0.0:PORT,
// limits 0 = unlimited, so its CPU is reported apart; or embedded: the
// exporter's own) and an exporter with --no-reflector, --probe.max-targets
// = 2N+100 and a module config written by the tool (interval --interval,
// timeout --probe-timeout, window --window, flows --flows, ip4). Sessions
// are keyed by target string, so the N targets are distinct loopback
// addresses 127.1.0.1, 127.1.0.2, ... (all of 127.0.0.0/8 is loopback on
// Linux) on the reflector's port; the wildcard reflector answers from the
// address probed. It requests /probe once per target,
// --create.concurrency at a time (the first scrape of a session waits for
// its first probe), checks llama_exporter_sessions, waits --warmup, then
// for --duration scrapes random targets at --scrape.rate per second,
// uncompressed unless --scrape.gzip asks for gzip as Prometheus does by
// default (gzip is most of a scrape's cost; see the README's "Running at
// scale").
//
// Baseline (--baseline, default on): before the sessions are created, a
// plain per-packet Go prober (the hidden plain-prober subcommand, pinned
// like the exporter) sends the same 44-octet STAMP probes to the same
// targets at the same rate for --duration: one WriteToUDPAddrPort per probe
// every 5 ms, one ReadFromUDPAddrPort per reply per flow socket, user-space
// timestamps, counts only. Its CPU is what these packets cost any Go prober
// on this host that day, so "exporter CPU / baseline CPU" compares the
// exporter with the host's floor, as the echo loop does for the reflector.
//
// --prober picks the module's protocol: stamp (default) probes the
// reflector; icmp pings the target addresses (root or ping sockets); tcp
// connects to the targets on a port where this tool accepts and closes
// connections. The baseline runs with stamp only.
//
// Peer (--peer.smokeping=PATH): before the sessions are created,
// smokeping_prober (built from its source) pings the same N addresses at
// --interval in privileged mode for --duration, pinned like the exporter,
// and the output adds "exporter CPU / smokeping_prober CPU".
//
// Output: creation time and first-scrape latency; over the steady period
// the exporter's CPU (utime+stime from /proc/PID/stat, in % of one core
// and µs per probe sent) and its ratio to the baseline's, the reflector's CPU, the probes reflected per
// second against the N/interval expected, receive-buffer drops on the
// exporter's and the reflector's sockets (from /proc/net/udp, by socket
// inode), the exporter's RSS (VmRSS, VmHWM from /proc/PID/status) and
// threads, /probe latency p50/p90/p99/max; then (--sweep, default on) one
// scrape of every target summing the loss counters of the sessions (sent,
// received, lost, late, duplicated, reordered, window sent/lost) and the
// number of targets with probe_success 0. The counters are cumulative since
// each session started (creation and sweep included); the window figures
// cover the last --window of each session.
//
// # rtt
//
// Runs one llama_exporter with its reflector on 127.0.0.1:PORT probing
// itself: a module with --interval (default 1ms) and a window of twice
// --probes intervals. It scrapes /probe until the window holds at least
// --probes decided probes, then reports the llama_probe_window_rtt_seconds
// summary (p50, p90, p99, p99.9: nearest rank over those probes), min,
// max, stddev, jitter, window loss and the timestamps label of
// llama_probe_target_info, and the debug page's "Window RTT" line as a
// cross-check. --burners=N runs N busy-loop processes (this tool's hidden
// "burn" subcommand; --cpu.burners pins them) for the whole run, to show
// what CPU contention does to the RTT. Extra exporter flags (for example
// timestamping options) go through --exporter.args.
//
// # Examples
//
//	llama-loadtest reflector --exporter.binary=/tmp/le --duration=10s --rounds=3
//	llama-loadtest reflector --exporter.binary=/tmp/le --sockets=1 --window=128 --baseline=none
//	llama-loadtest sessions --exporter.binary=/tmp/le --sessions=1000 --interval=1s --duration=30s
//	llama-loadtest sessions --exporter.binary=/tmp/le --sessions=10000 --interval=1s --duration=30s --cpu.exporter=1 --cpu.reflector=0
//	llama-loadtest rtt --exporter.binary=/tmp/le --probes=10000
//	llama-loadtest rtt --exporter.binary=/tmp/le --probes=10000 --burners=2
//	llama-loadtest rtt --exporter.binary=/tmp/le --exporter.args='--log.level=warn'
package main
