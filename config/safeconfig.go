package config

import (
	"sync"
	"sync/atomic"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/prometheus/client_golang/prometheus"
)

// The metric families served here, name and type (see metricdef).
var (
	nameLastReloadSuccessful              = metricdef.Name(metricdef.Gauge, "llama_exporter_config_last_reload_successful")
	nameLastReloadSuccessTimestampSeconds = metricdef.Name(metricdef.Gauge, "llama_exporter_config_last_reload_success_timestamp_seconds")
)

// SafeConfig holds the running configuration and replaces it atomically on
// reload. It is safe for concurrent use.
type SafeConfig struct {
	reloadMu sync.Mutex // serialises Reload
	cur      atomic.Pointer[Config]

	lastReloadSuccessful  prometheus.Gauge
	lastReloadSuccessTime prometheus.Gauge
}

// NewSafeConfig returns a SafeConfig holding Default() until the first
// successful Reload. It registers two gauges with reg (unless reg is nil):
// llama_exporter_config_last_reload_successful, 1 if the last reload
// succeeded and 0 otherwise (also 0 before the first reload), and
// llama_exporter_config_last_reload_success_timestamp_seconds, the Unix
// time in seconds of the last successful reload. It panics if they are
// already registered with reg.
func NewSafeConfig(reg prometheus.Registerer) *SafeConfig {
	sc := &SafeConfig{
		lastReloadSuccessful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameLastReloadSuccessful,
			Help: "Whether the last configuration reload attempt was successful (1) or not (0).",
		}),
		lastReloadSuccessTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameLastReloadSuccessTimestampSeconds,
			Help: "Unix time in seconds of the last successful configuration reload.",
		}),
	}
	sc.cur.Store(Default())
	if reg != nil {
		reg.MustRegister(sc.lastReloadSuccessful, sc.lastReloadSuccessTime)
	}
	return sc
}

// Get returns the current configuration, never nil. The returned Config is
// shared and must not be modified; a Reload replaces it with a new one
// rather than changing it.
func (sc *SafeConfig) Get() *Config {
	return sc.cur.Load()
}

// Reload loads filename (see Load), or takes Default() if filename is
// empty, and makes it the current configuration. On success the gauge
// llama_exporter_config_last_reload_successful is set to 1 and the success
// timestamp to the current time. On error the current configuration is
// kept, the success gauge is set to 0 and the error from Load is returned.
// Concurrent calls are serialised.
func (sc *SafeConfig) Reload(filename string) error {
	sc.reloadMu.Lock()
	defer sc.reloadMu.Unlock()

	c := Default()
	if filename != "" {
		var err error
		c, err = Load(filename)
		if err != nil {
			sc.lastReloadSuccessful.Set(0)
			return err
		}
	}
	sc.cur.Store(c)
	sc.lastReloadSuccessful.Set(1)
	sc.lastReloadSuccessTime.SetToCurrentTime()
	return nil
}
