// Command llama_exporter measures packet loss and round-trip latency between
// hosts: it reflects STAMP (RFC 8762) test packets for others and probes the
// targets that Prometheus names on /probe, continuously, in the background.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	kitlog "github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/clockstatus"
	"github.com/llama-exporter/llama_exporter/internal/hostdrops"
	"github.com/llama-exporter/llama_exporter/prober"
	"github.com/llama-exporter/llama_exporter/reflector"
)

const exporterName = "llama_exporter"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main with an exit code, so deferred cleanups run; it logs, and
// writes its errors, to stderr. It parses the flags, starts the reflector
// and the prober, and serves HTTP until a signal stops it.
func run(args []string, stderr io.Writer) int {
	f, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", exporterName, err)
		return 2
	}
	logger, slogger := newLoggers(stderr, f.logLevel, f.logFormat)
	// Signals are caught from the start, so that SIGTERM during start-up
	// still shuts down cleanly.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	if f.configCheck {
		return checkConfig(f.configFile, stderr)
	}

	level.Info(logger).Log("msg", "starting "+exporterName, "version", version.Info(), "build_context", version.BuildContext())
	reg := newRegistry()
	sc := config.NewSafeConfig(reg)
	if err := sc.Reload(f.configFile); err != nil {
		level.Error(logger).Log("msg", "loading config", "file", describeFile(f.configFile), "err", err)
		return 1
	}
	clock, _ := clockstatus.ParseMode(f.clockSync) // kingpin checked it
	clockstatus.Start(clock)
	defer clockstatus.Stop()
	e := clockstatus.ErrorEstimate()
	level.Info(logger).Log("msg", "clock", "synchronized", e.Synchronized(), "error", e.Duration(), "source", f.clockSync)
	drops := startHostDrops(f.hostDrops, reg, logger)
	defer drops.Close()
	if f.reflectorOn {
		refl, err := startReflector(f, reg, slogger.With("component", "reflector"))
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", exporterName, err)
			return 1
		}
		defer refl.Close()
		level.Info(logger).Log("msg", "reflector listening", "addresses", fmt.Sprint(refl.Addrs()))
		for _, a := range refl.Addrs() {
			drops.WatchReflector(a.Port())
		}
	}
	mgr := prober.NewManager(prober.Options{MaxTargets: f.maxTargets, UserTimestamps: !f.kernelTS, Ports: drops}, reg, slogger.With("component", "prober"))
	defer mgr.Close()
	mgr.ApplyConfig(sc.Get())

	reload := reloader(f.configFile, sc, mgr, logger)
	timeoutOffset := time.Duration(f.timeoutOffset * float64(time.Second))
	srv := &http.Server{Handler: newMux(reg, sc, mgr, timeoutOffset, reload, slogger), ReadHeaderTimeout: 10 * time.Second}
	return serve(srv, f.web, signals, reload, logger, slogger)
}

// flags is the parsed command line.
type flags struct {
	configFile     string
	configCheck    bool
	timeoutOffset  float64 // seconds
	reflectorOn    bool
	reflectorAddrs []string
	maxPPS         float64
	maxPPSSource   float64
	authKeyFile    string
	reflSockets    int
	stateful       bool
	maxTargets     int
	kernelTS       bool
	hostDrops      bool
	clockSync      string
	logLevel       string
	logFormat      string
	web            *web.FlagConfig
}

// parseFlags parses the command line; --help and --version print and exit,
// as kingpin does.
func parseFlags(args []string) (*flags, error) {
	app := kingpin.New(exporterName, "Loss and latency matrix exporter: STAMP reflector and continuous /probe prober.")
	f := &flags{}
	app.Flag("config.file", "YAML file with probe modules; without it the built-in \"default\" module is used.").StringVar(&f.configFile)
	app.Flag("config.check", "Validate the config file and exit 0, or print the error and exit 1.").BoolVar(&f.configCheck)
	app.Flag("timeout-offset", "Seconds subtracted from the Prometheus scrape timeout header.").Default("0.5").Float64Var(&f.timeoutOffset)
	app.Flag("reflector", "Run the STAMP reflector.").Default("true").BoolVar(&f.reflectorOn)
	app.Flag("reflector.listen-address", "host:port the reflector listens on; repeatable. 862 is the STAMP port (RFC 8762).").Default(":862").StringsVar(&f.reflectorAddrs)
	app.Flag("reflector.max-pps", "Global reflector limit in packets per second; excess is dropped and counted. 0 = unlimited.").Default("100000").Float64Var(&f.maxPPS)
	app.Flag("reflector.max-pps-per-source", "Reflector limit in packets per second per source address; excess is dropped and counted. 0 = unlimited.").Default("2000").Float64Var(&f.maxPPSSource)
	app.Flag("reflector.auth-key-file", "File holding the shared key of STAMP authenticated mode (RFC 8762 §4.2.2); with it the reflector answers only probes with a valid HMAC.").StringVar(&f.authKeyFile)
	app.Flag("reflector.sockets", "Sockets per reflector listen address and family, sharing the port with SO_REUSEPORT; the kernel spreads flows over them.").Default(strconv.Itoa(runtime.NumCPU())).IntVar(&f.reflSockets)
	app.Flag("reflector.stateful", "Number each test session's packets (RFC 8762 §4.3.1 stateful mode) so that senders can tell forward from backward loss.").Default("true").BoolVar(&f.stateful)
	app.Flag("probe.max-targets", "Cap on concurrent probe sessions across all modules; more answer 503. 0 = unlimited.").Default("10000").IntVar(&f.maxTargets)
	app.Flag("probe.kernel-timestamps", "Time probes with the kernel's software timestamps (SO_TIMESTAMPING) where available; --no-probe.kernel-timestamps uses the monotonic clock only, for comparison.").Default("true").BoolVar(&f.kernelTS)
	app.Flag("collector.host-drops", "Linux, eBPF: count the kernel's drops of the probe traffic by drop reason (needs CAP_BPF and CAP_PERFMON, and the kernel's BTF).").Default("false").BoolVar(&f.hostDrops)
	app.Flag("clock.synchronized", "What this host's STAMP Error Estimate says of its clock: auto reads the kernel's clock discipline (adjtimex: synchronised while STA_UNSYNC is clear, its estimated error); true or false overrides it, e.g. true where a PTP daemon keeps the clock but not the kernel's status.").Default("auto").EnumVar(&f.clockSync, "auto", "true", "false")
	app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").EnumVar(&f.logFormat, "logfmt", "json")
	f.web = kingpinflag.AddFlags(app, ":5200")
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')
	_, err := app.Parse(args)
	return f, err
}

// checkConfig is --config.check: it validates file, or the built-in
// default without one, says so on stdout or stderr, and returns the exit
// code.
func checkConfig(file string, stderr io.Writer) int {
	if _, err := loadConfig(file); err != nil {
		fmt.Fprintf(stderr, "invalid config: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "config %s is valid\n", describeFile(file))
	return 0
}

// newRegistry returns the registry behind /metrics, with the build info,
// Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector(exporterName),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// startHostDrops starts the host-drop collector when on is set, and
// registers it, on or off, so that llama_exporter_host_drops_enabled says
// which. A collector that cannot start logs one line naming what is missing
// and the exporter carries on without it.
func startHostDrops(on bool, reg prometheus.Registerer, logger kitlog.Logger) *hostdrops.Collector {
	c := &hostdrops.Collector{}
	if on {
		c = hostdrops.New()
		if err := c.Err(); err != nil {
			level.Warn(logger).Log("msg", "host drops not counted", "err", err)
		} else {
			level.Info(logger).Log("msg", "counting the kernel's drops of probe traffic (--collector.host-drops)")
			if err := c.LatencyErr(); err != nil {
				level.Warn(logger).Log("msg", "host receive latency not measured", "err", err)
			}
		}
	}
	reg.MustRegister(c)
	return c
}

// startReflector binds the STAMP reflector as f says and starts serving.
// Its error is the line to print before exiting, naming the flag to change.
func startReflector(f *flags, reg prometheus.Registerer, logger *slog.Logger) (*reflector.Reflector, error) {
	var authKey []byte
	if f.authKeyFile != "" {
		k, err := config.ReadKeyFile(f.authKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--reflector.auth-key-file: %v", err)
		}
		authKey = k
	}
	rxDelay := prober.NewReceiveDelay("reflector")
	reg.MustRegister(rxDelay)
	refl, err := reflector.New(reflector.Config{
		AuthKey:         authKey,
		ListenAddresses: f.reflectorAddrs, MaxPPS: f.maxPPS, MaxPPSPerSource: f.maxPPSSource,
		Stateless: !f.stateful, Sockets: f.reflSockets,
		ReceiveDelay: rxDelay.ObserveBatch,
	}, reg, logger)
	if errors.Is(err, syscall.EACCES) {
		return nil, fmt.Errorf("cannot bind the reflector to %v: ports below 1024 need root or CAP_NET_BIND_SERVICE; change --reflector.listen-address or run with --no-reflector", f.reflectorAddrs)
	}
	if err != nil {
		return nil, fmt.Errorf("%v (change --reflector.listen-address or run with --no-reflector)", err)
	}
	refl.Serve()
	return refl, nil
}

// reloader returns the reload of SIGHUP and POST /-/reload: it reads file
// again and applies it to mgr, or logs why not and keeps the running
// config.
func reloader(file string, sc *config.SafeConfig, mgr *prober.Manager, logger kitlog.Logger) func() error {
	return func() error {
		if err := sc.Reload(file); err != nil {
			level.Error(logger).Log("msg", "reloading config failed, keeping the old one", "err", err)
			return err
		}
		mgr.ApplyConfig(sc.Get())
		level.Info(logger).Log("msg", "config reloaded", "file", describeFile(file))
		return nil
	}
}

// newMux routes the exporter's HTTP endpoints: /metrics, /probe, the
// health, ready and reload endpoints, /config, Go's profiler and the
// landing page.
func newMux(reg *prometheus.Registry, sc *config.SafeConfig, mgr *prober.Manager, timeoutOffset time.Duration, reload func() error, logger *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.Handle("/probe", &prober.Handler{
		Manager: mgr, Config: sc.Get, Logger: logger.With("component", "probe"),
		TimeoutOffset: timeoutOffset,
	})
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Ready") })
	mux.HandleFunc("/-/reload", reloadHandler(reload))
	mux.HandleFunc("/config", configHandler(sc))
	// Go's profiler, as Prometheus servers and exporters offer it.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { landingPage(w, r, mgr, logger) })
	return mux
}

// reloadHandler is /-/reload: a POST reloads the config, and answers 500
// with the error when that fails.
func reloadHandler(reload func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "This endpoint requires a POST request.", http.StatusMethodNotAllowed)
			return
		}
		if err := reload(); err != nil {
			http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "config reloaded")
	}
}

// configHandler is /config: the running config as YAML.
func configHandler(sc *config.SafeConfig) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		y, err := sc.Get().YAML()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(y)
	}
}

// serve runs srv on the addresses of webFlags until it fails, or until
// SIGTERM or an interrupt comes, and returns the exit code; SIGHUP calls
// reload.
func serve(srv *http.Server, webFlags *web.FlagConfig, signals <-chan os.Signal, reload func() error, logger kitlog.Logger, slogger *slog.Logger) int {
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(srv, webFlags, slogger) }()
	for {
		select {
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				level.Error(logger).Log("msg", "HTTP server failed", "err", err)
				return 1
			}
			return 0
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				reload()
				continue
			}
			level.Info(logger).Log("msg", "shutting down", "signal", sig)
			shutdown(srv, serveErr)
			return 0
		}
	}
}

// shutdown stops srv, closing it outright if its connections are not idle
// within half a second, and waits for its ListenAndServe, whose error
// serveErr brings, to return. That leaves run's deferred closes the other
// half of the second in which the exporter stops.
func shutdown(srv *http.Server, serveErr <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	cancel()
	<-serveErr
}

func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return config.Default(), nil
	}
	return config.Load(file)
}

func describeFile(file string) string {
	if file == "" {
		return "(built-in default)"
	}
	return file
}

// sessionsTable renders the landing page's table of active sessions; the
// template escapes targets, which come from scrape URLs.
var sessionsTable = template.Must(template.New("sessions").Parse(`
<h3>Active probe sessions ({{len .}})</h3>
<table border="1" cellpadding="4" style="border-collapse: collapse">
<tr><th>module</th><th>target</th><th>address</th><th>sent</th><th>window loss</th><th>window p50 RTT</th><th>window p99 RTT</th><th>suspect link</th><th>debug</th></tr>
{{range .}}<tr><td>{{.Module}}</td><td>{{.Target}}</td><td>{{.Dst}}</td><td>{{.Sent}}</td><td>{{.Loss}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td>{{.Suspect}}</td><td><a href="{{.Debug}}">debug</a></td></tr>
{{end}}</table>`))

type sessionRow struct {
	Module, Target, Dst, Loss, P50, P99 string
	Suspect                             string // path_trace's suspect links of a lossy session
	Sent                                uint64
	Debug                               string
}

func landingPage(w http.ResponseWriter, r *http.Request, mgr *prober.Manager, logger *slog.Logger) {
	var rows []sessionRow
	for _, s := range mgr.Sessions() {
		sn := s.Snapshot()
		rows = append(rows, sessionRow{
			Module: s.Module, Target: s.Target, Dst: s.Address(), Sent: sn.Sent,
			Loss: percent(sn.LossRatio), P50: seconds(sn.Quantiles[0.5]), P99: seconds(sn.Quantiles[0.99]),
			Debug:   "probe?" + (url.Values{"module": {s.Module}, "target": {s.Target}, "debug": {"true"}}).Encode(),
			Suspect: suspects(s.SuspectLinks()),
		})
	}
	var table bytes.Buffer
	if err := sessionsTable.Execute(&table, rows); err != nil {
		logger.Error("landing page", "err", err)
	}
	lp, err := web.NewLandingPage(web.LandingConfig{
		Name:        exporterName,
		Description: "Loss and latency matrix: STAMP reflector and continuous prober",
		Version:     version.Info(),
		Profiling:   "true",
		Form: web.LandingForm{Action: "/probe", Inputs: []web.LandingFormInput{
			{Label: "Target", Type: "text", Name: "target", Placeholder: "host[:port]"},
			{Label: "Module", Type: "text", Name: "module", Value: "default"},
			{Label: "Debug", Type: "checkbox", Name: "debug", Value: "true"},
		}},
		Links: []web.LandingLinks{
			{Address: "/metrics", Text: "Metrics", Description: "the exporter's and the reflector's own metrics"},
			{Address: "/config", Text: "Configuration"},
		},
		ExtraHTML: table.String(),
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	lp.ServeHTTP(w, r)
}

// suspects lists suspect links for the landing page; "-" for none.
func suspects(links []prober.SuspectLink) string {
	if len(links) == 0 {
		return "-"
	}
	s := make([]string, len(links))
	for i, l := range links {
		s[i] = l.String()
	}
	return strings.Join(s, "; ")
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

func seconds(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return time.Duration(v * 1e9).Round(time.Microsecond).String()
}
