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
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/prober"
	"github.com/llama-exporter/llama_exporter/reflector"
)

const exporterName = "llama_exporter"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main with an exit code, so deferred cleanups run; it logs, and
// writes its errors, to stderr.
func run(args []string, stderr io.Writer) int {
	app := kingpin.New(exporterName, "Loss and latency matrix exporter: STAMP reflector and continuous /probe prober.")
	var (
		configFile     = app.Flag("config.file", "YAML file with probe modules; without it the built-in \"default\" module is used.").String()
		configCheck    = app.Flag("config.check", "Validate the config file and exit 0, or print the error and exit 1.").Bool()
		timeoutOffset  = app.Flag("timeout-offset", "Seconds subtracted from the Prometheus scrape timeout header.").Default("0.5").Float64()
		reflectorOn    = app.Flag("reflector", "Run the STAMP reflector.").Default("true").Bool()
		reflectorAddrs = app.Flag("reflector.listen-address", "host:port the reflector listens on; repeatable. 862 is the STAMP port (RFC 8762).").Default(":862").Strings()
		maxPPS         = app.Flag("reflector.max-pps", "Global reflector limit in packets per second; excess is dropped and counted. 0 = unlimited.").Default("100000").Float64()
		maxPPSSource   = app.Flag("reflector.max-pps-per-source", "Reflector limit in packets per second per source address; excess is dropped and counted. 0 = unlimited.").Default("2000").Float64()
		authKeyFile    = app.Flag("reflector.auth-key-file", "File holding the shared key of STAMP authenticated mode (RFC 8762 §4.2.2); with it the reflector answers only probes with a valid HMAC.").String()
		reflSockets    = app.Flag("reflector.sockets", "Sockets per reflector listen address and family, sharing the port with SO_REUSEPORT; the kernel spreads flows over them.").Default(strconv.Itoa(runtime.NumCPU())).Int()
		stateful       = app.Flag("reflector.stateful", "Number each test session's packets (RFC 8762 §4.3.1 stateful mode) so that senders can tell forward from backward loss.").Default("true").Bool()
		maxTargets     = app.Flag("probe.max-targets", "Cap on concurrent probe sessions across all modules; more answer 503. 0 = unlimited.").Default("10000").Int()
		kernelTS       = app.Flag("probe.kernel-timestamps", "Time probes with the kernel's software timestamps (SO_TIMESTAMPING) where available; --no-probe.kernel-timestamps uses the monotonic clock only, for comparison.").Default("true").Bool()
		logLevel       = app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").Enum("debug", "info", "warn", "error")
		logFormat      = app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").Enum("logfmt", "json")
		webFlags       = kingpinflag.AddFlags(app, ":5200")
	)
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", exporterName, err)
		return 2
	}
	kitLogger, slogLogger := newLoggers(stderr, *logLevel, *logFormat)
	// Signals are caught from the start, so that SIGTERM during start-up
	// still shuts down cleanly.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)

	if *configCheck {
		if _, err := loadConfig(*configFile); err != nil {
			fmt.Fprintf(stderr, "invalid config: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stdout, "config %s is valid\n", describeFile(*configFile))
		return 0
	}

	level.Info(kitLogger).Log("msg", "starting "+exporterName, "version", version.Info(), "build_context", version.BuildContext())
	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector(exporterName),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sc := config.NewSafeConfig(reg)
	if err := sc.Reload(*configFile); err != nil {
		level.Error(kitLogger).Log("msg", "loading config", "file", describeFile(*configFile), "err", err)
		return 1
	}

	var refl *reflector.Reflector
	if *reflectorOn {
		var authKey []byte
		if *authKeyFile != "" {
			k, err := config.ReadKeyFile(*authKeyFile)
			if err != nil {
				fmt.Fprintf(stderr, "%s: --reflector.auth-key-file: %v\n", exporterName, err)
				return 1
			}
			authKey = k
		}
		var err error
		refl, err = reflector.New(reflector.Config{
			AuthKey:         authKey,
			ListenAddresses: *reflectorAddrs, MaxPPS: *maxPPS, MaxPPSPerSource: *maxPPSSource,
			Stateless: !*stateful, Sockets: *reflSockets,
		}, reg, slogLogger.With("component", "reflector"))
		if errors.Is(err, syscall.EACCES) {
			fmt.Fprintf(stderr, "%s: cannot bind the reflector to %v: ports below 1024 need root or CAP_NET_BIND_SERVICE; change --reflector.listen-address or run with --no-reflector\n", exporterName, *reflectorAddrs)
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v (change --reflector.listen-address or run with --no-reflector)\n", exporterName, err)
			return 1
		}
		refl.Serve()
		defer refl.Close()
		level.Info(kitLogger).Log("msg", "reflector listening", "addresses", fmt.Sprint(refl.Addrs()))
	}

	mgr := prober.NewManager(prober.Options{MaxTargets: *maxTargets, UserTimestamps: !*kernelTS}, reg, slogLogger.With("component", "prober"))
	defer mgr.Close()
	mgr.ApplyConfig(sc.Get())

	reload := func() error {
		if err := sc.Reload(*configFile); err != nil {
			level.Error(kitLogger).Log("msg", "reloading config failed, keeping the old one", "err", err)
			return err
		}
		mgr.ApplyConfig(sc.Get())
		level.Info(kitLogger).Log("msg", "config reloaded", "file", describeFile(*configFile))
		return nil
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.Handle("/probe", &prober.Handler{
		Manager: mgr, Config: sc.Get, Logger: slogLogger.With("component", "probe"),
		TimeoutOffset: time.Duration(*timeoutOffset * float64(time.Second)),
	})
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Ready") })
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("/config", func(w http.ResponseWriter, _ *http.Request) {
		y, err := sc.Get().YAML()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(y)
	})
	// Go's profiler, as Prometheus servers and exporters offer it.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { landingPage(w, r, mgr, slogLogger) })

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(srv, webFlags, slogLogger) }()
	for {
		select {
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				level.Error(kitLogger).Log("msg", "HTTP server failed", "err", err)
				return 1
			}
			return 0
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				reload()
				continue
			}
			level.Info(kitLogger).Log("msg", "shutting down", "signal", sig)
			// Within a second in all: HTTP gets half of it, then the
			// deferred closes stop the prober and the reflector.
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
			cancel()
			<-serveErr
			return 0
		}
	}
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
<tr><th>module</th><th>target</th><th>address</th><th>sent</th><th>window loss</th><th>window p50 RTT</th><th>window p99 RTT</th><th>debug</th></tr>
{{range .}}<tr><td>{{.Module}}</td><td>{{.Target}}</td><td>{{.Dst}}</td><td>{{.Sent}}</td><td>{{.Loss}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td><a href="{{.Debug}}">debug</a></td></tr>
{{end}}</table>`))

type sessionRow struct {
	Module, Target, Dst, Loss, P50, P99 string
	Sent                                uint64
	Debug                               string
}

func landingPage(w http.ResponseWriter, r *http.Request, mgr *prober.Manager, logger *slog.Logger) {
	var rows []sessionRow
	for _, s := range mgr.Sessions() {
		sn := s.Snapshot()
		rows = append(rows, sessionRow{
			Module: s.Module, Target: s.Target, Dst: sn.Dst.String(), Sent: sn.Sent,
			Loss: percent(sn.LossRatio), P50: seconds(sn.Quantiles[0.5]), P99: seconds(sn.Quantiles[0.99]),
			Debug: "probe?" + (url.Values{"module": {s.Module}, "target": {s.Target}, "debug": {"true"}}).Encode(),
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
