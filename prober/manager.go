package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// The metric families served here, name and type (see metricdef).
var (
	nameSessions              = metricdef.Name(metricdef.Gauge, "llama_exporter_sessions")
	nameSessionsStartedTotal  = metricdef.Name(metricdef.Counter, "llama_exporter_sessions_started_total")
	nameSessionsExpiredTotal  = metricdef.Name(metricdef.Counter, "llama_exporter_sessions_expired_total")
	nameSessionsRejectedTotal = metricdef.Name(metricdef.Counter, "llama_exporter_sessions_rejected_total")
	nameModuleUnknownTotal    = metricdef.Name(metricdef.Counter, "llama_exporter_module_unknown_total")
	nameSendErrorsTotal       = metricdef.Name(metricdef.Counter, "llama_exporter_send_errors_total")
	nameRepliesBadDataTotal   = metricdef.Name(metricdef.Counter, "llama_exporter_replies_bad_data_total")
	nameRepliesUnmatchedTotal = metricdef.Name(metricdef.Counter, "llama_exporter_replies_unmatched_total")
)

// Rejection reasons, the values of llama_exporter_sessions_rejected_total's
// reason label.
const (
	ReasonLimit      = "limit"
	ReasonNotAllowed = "not_allowed"
	ReasonBadTarget  = "bad_target"
)

// Errors returned by Manager.Get; the /probe handler maps them to HTTP
// status codes.
var (
	// ErrLimit: --probe.max-targets sessions exist already (503).
	ErrLimit = errors.New("too many probe sessions (--probe.max-targets)")
	// ErrNotAllowed: the resolved address is outside allowed_targets (403).
	ErrNotAllowed = errors.New("target not in the module's allowed_targets")
)

// BadTargetError is a malformed target (400).
type BadTargetError struct{ Err error }

func (e *BadTargetError) Error() string { return e.Err.Error() }
func (e *BadTargetError) Unwrap() error { return e.Err }

// defaultResolveEvery is how often a hostname target is resolved again.
const defaultResolveEvery = time.Minute

type sessionKey struct{ module, target string }

// Manager owns every probe session, the per-module socket pools and the
// scheduler. It is safe for concurrent use.
type Manager struct {
	logger         *slog.Logger
	maxTargets     int
	userTimestamps bool
	ports          PortWatcher   // nil: none
	rxDelay        *ReceiveDelay // llama_exporter_receive_delay_seconds{role="prober"}
	lookup         lookupFunc    // net.DefaultResolver's; replaced in tests
	resolveEvery   time.Duration // how often hostnames are resolved again

	mu       sync.Mutex
	sessions map[sessionKey]*Session
	pools    map[string]*pool
	sched    *scheduler
	rounds   *roundSignal // nil with user-space timestamps
	metrics  *managerMetrics
	dirty    []*flowConn // flow sockets with probes queued; scheduler goroutine only
	tracer   *tracer     // path tracing; started with the first module that traces
	probe    Probe       // encode's; scheduler goroutine only
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// Options are the prober's command-line settings.
type Options struct {
	// MaxTargets caps the concurrent sessions across modules; 0 means
	// unlimited.
	MaxTargets int
	// UserTimestamps times probes with the monotonic clock only, without
	// kernel timestamps (for comparison; kernel timestamps are better).
	// It is forced where the socket layer has none (udpsock.KernelTimestamps
	// false: FreeBSD, macOS), so that replies are read as they come
	// rather than once per scheduler round.
	UserTimestamps bool
	// Ports, if not nil, is told the local ports of the flow sockets while
	// they are open (the host-drop collector).
	Ports PortWatcher
}

// NewManager starts the scheduler and the maintenance loop. Metrics
// (llama_exporter_*) are registered with reg.
func NewManager(o Options, reg prometheus.Registerer, logger *slog.Logger) *Manager {
	m := &Manager{
		logger:         logger,
		maxTargets:     o.MaxTargets,
		userTimestamps: o.UserTimestamps || !udpsock.KernelTimestamps,
		ports:          o.Ports,
		lookup:         net.DefaultResolver.LookupNetIP,
		resolveEvery:   defaultResolveEvery,
		sessions:       make(map[sessionKey]*Session),
		pools:          make(map[string]*pool),
		metrics:        newManagerMetrics(reg),
		rxDelay:        NewReceiveDelay("prober"),
		stop:           make(chan struct{}),
	}
	if reg != nil {
		reg.MustRegister(linkCollector{m}, m.rxDelay)
	}
	m.sched = newScheduler(m.sendRound)
	if !m.userTimestamps {
		m.rounds = newRoundSignal()
		m.sched.onRound = m.rounds.broadcast
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.sched.run() }()
	go func() { defer m.wg.Done(); m.maintain() }()
	return m
}

// Close stops every session, closes every socket and waits for all
// goroutines.
func (m *Manager) Close() {
	m.stopOnce.Do(func() {
		close(m.stop)
		m.sched.close()
		m.mu.Lock()
		for k, s := range m.sessions {
			m.removeLocked(k, s, false)
		}
		for name, p := range m.pools {
			p.close()
			delete(m.pools, name)
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
}

// ApplyConfig makes cfg the running configuration: sessions of modules that
// were removed or changed are stopped (and their sockets closed); sessions
// of unchanged modules keep running with their counters.
func (m *Manager) ApplyConfig(cfg *config.Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, s := range m.sessions {
		if nm, ok := cfg.Modules[k.module]; !ok || !nm.Equal(s.cfg) {
			m.removeLocked(k, s, false)
		}
	}
	for name, p := range m.pools {
		if nm, ok := cfg.Modules[name]; !ok || !nm.Equal(p.cfg) {
			p.close() // its sessions are gone
			delete(m.pools, name)
		}
	}
	for name := range cfg.Modules {
		m.metrics.initModule(name)
	}
}

// Get returns the session of (module, target), creating and starting it if
// it does not exist, and marks it as scraped. created reports a new
// session, whose first probe the caller may wait for. Errors:
// *BadTargetError, ErrNotAllowed, ErrLimit, *UnavailableError when the
// module's sockets cannot be opened on this host at all, or a resolution
// or socket error.
//
// The target is parsed and resolved without holding m.mu, so that a slow
// DNS lookup does not stall other scrapes; the session table is therefore
// checked again once the lock is taken back.
func (m *Manager) Get(ctx context.Context, module string, cfg *config.Module, target string) (s *Session, created bool, err error) {
	key := sessionKey{module, target}
	now := mono()
	s, full := m.scraped(key, cfg, now)
	if s != nil {
		return s, false, nil
	}
	rt, err := m.resolveTarget(ctx, module, cfg, target, full)
	if err != nil {
		return nil, false, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sessions[key]; s != nil {
		if s.cfg.Equal(cfg) {
			s.lastScrape.Store(now)
			return s, false, nil // another scrape created it meanwhile
		}
		m.removeLocked(key, s, false) // created under an older config
	}
	if m.maxTargets > 0 && len(m.sessions) >= m.maxTargets {
		m.metrics.rejected.WithLabelValues(ReasonLimit).Inc()
		return nil, false, ErrLimit
	}
	p := m.poolLocked(module, cfg)
	if _, err := p.sockets(family(rt.dst.Addr())); err != nil {
		return nil, false, err
	}
	return m.startLocked(key, cfg, rt, p, now), true, nil
}

// scraped is Get's fast path: it returns the running session of key, marked
// as scraped at now, when one exists with the same config. Otherwise it
// returns nil and whether --probe.max-targets sessions exist already, so
// that a full manager rejects the target before resolving it.
func (m *Manager) scraped(key sessionKey, cfg *config.Module, now int64) (s *Session, full bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sessions[key]; s != nil && s.cfg.Equal(cfg) {
		s.lastScrape.Store(now)
		return s, false
	}
	return nil, m.maxTargets > 0 && len(m.sessions) >= m.maxTargets
}

// resolveTarget parses target for module and resolves its host to the
// destination of a new session, and counts each rejection by reason. A
// malformed target (*BadTargetError) is reported before a full manager
// (ErrLimit), and both before the lookup; a multicast, broadcast or
// unspecified address (*BadTargetError) and allowed_targets (ErrNotAllowed)
// come last, as only a resolved address can be checked.
func (m *Manager) resolveTarget(ctx context.Context, module string, cfg *config.Module, target string, full bool) (resolvedTarget, error) {
	host, port, err := parseModuleTarget(target, cfg)
	if err == nil && port == 0 && Probers[cfg.Prober].Spec.UsesPort {
		err = fmt.Errorf("target %q names no port and module %s sets none: prober %s needs one", target, module, cfg.Prober)
	}
	if err != nil {
		m.metrics.rejected.WithLabelValues(ReasonBadTarget).Inc()
		return resolvedTarget{}, &BadTargetError{err}
	}
	if full {
		m.metrics.rejected.WithLabelValues(ReasonLimit).Inc()
		return resolvedTarget{}, ErrLimit
	}
	addr, err := resolve(ctx, m.lookup, host, cfg)
	if err != nil {
		return resolvedTarget{}, err
	}
	if err := checkDestination(addr); err != nil {
		m.metrics.rejected.WithLabelValues(ReasonBadTarget).Inc()
		return resolvedTarget{}, &BadTargetError{fmt.Errorf("target %q: %w", quoted(target), err)}
	}
	if !cfg.Allowed(addr) {
		m.metrics.rejected.WithLabelValues(ReasonNotAllowed).Inc()
		return resolvedTarget{}, ErrNotAllowed
	}
	return resolvedTarget{name: target, host: host, port: port, dst: netip.AddrPortFrom(addr, port)}, nil
}

// poolLocked returns module's socket pool, replacing one made for another
// config of the module (whose sessions are gone) by a new, empty one; the
// new pool's sockets are opened later, per family, by pool.sockets. m.mu
// must be held.
func (m *Manager) poolLocked(module string, cfg *config.Module) *pool {
	p := m.pools[module]
	if p != nil && p.cfg.Equal(cfg) {
		return p
	}
	if p != nil {
		p.close()
	}
	p = newPool(module, cfg, m.logger, &poolStats{
		badReply:  m.metrics.badReplies.WithLabelValues(module).Inc,
		unmatched: m.metrics.unmatched.WithLabelValues(module).Inc,
		sendError: m.metrics.sendErrors.WithLabelValues(module).Inc,
	})
	p.userTimestamps, p.rounds, p.ports, p.rxDelay = m.userTimestamps, m.rounds, m.ports, m.rxDelay
	if cfg.PathTrace != nil {
		p.trace = newPoolTrace(m.tracerLocked(), p)
	}
	m.pools[module] = p
	return p
}

// startLocked creates the session of key on pool p, whose sockets are open,
// registers it with the pool (so that replies find it), with the tracer when
// the module traces paths, and with the scheduler, and counts it. m.mu must
// be held.
func (m *Manager) startLocked(key sessionKey, cfg *config.Module, rt resolvedTarget, p *pool, now int64) *Session {
	s := newSession(key.module, cfg, rt, now)
	s.pool = p
	p.register(s, rt.dst)
	if s.paths != nil {
		p.trace.tracer.add(s)
	}
	m.sessions[key] = s
	m.metrics.sessions.WithLabelValues(key.module).Inc()
	m.metrics.started.WithLabelValues(key.module).Inc()
	m.sched.add(s)
	m.logger.Debug("probe session started", "module", key.module, "target", key.target, "dst", rt.dst)
	return s
}

// removeLocked stops session s; expired says whether it timed out idle.
func (m *Manager) removeLocked(k sessionKey, s *Session, expired bool) {
	s.closed.Store(true)
	delete(m.sessions, k)
	s.pool.unregister(s, s.Dst())
	m.metrics.sessions.WithLabelValues(k.module).Dec()
	if expired {
		m.metrics.expired.WithLabelValues(k.module).Inc()
	}
}

// Sessions returns the active sessions sorted by module and target.
func (m *Manager) Sessions() []*Session {
	m.mu.Lock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b *Session) int {
		if c := strings.Compare(a.Module, b.Module); c != 0 {
			return c
		}
		return strings.Compare(a.Target, b.Target)
	})
	return out
}

// maintain expires idle sessions and re-resolves hostname targets.
func (m *Manager) maintain() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		now := mono()
		m.mu.Lock()
		for k, s := range m.sessions {
			if now-s.lastScrape.Load() > int64(s.cfg.IdleTimeout) {
				m.logger.Debug("probe session expired", "module", k.module, "target", k.target)
				m.removeLocked(k, s, true)
				continue
			}
			if _, err := netip.ParseAddr(s.host); err == nil {
				continue
			}
			s.mu.Lock()
			due := !s.resolving && now-s.resolvedAt >= int64(m.resolveEvery)
			if due {
				s.resolving = true
			}
			s.mu.Unlock()
			if due {
				m.wg.Add(1)
				go func() { defer m.wg.Done(); m.reresolve(s) }()
			}
		}
		m.mu.Unlock()
	}
}

// reresolve follows a hostname whose address changed. A failed lookup or a
// new address outside allowed_targets keeps the old address.
func (m *Manager) reresolve(s *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := resolve(ctx, m.lookup, s.host, s.cfg)
	s.mu.Lock()
	s.resolving = false
	s.resolvedAt = mono()
	old := s.dst
	s.mu.Unlock()
	switch {
	case err != nil:
		m.logger.Warn("re-resolving target failed, keeping the old address", "target", quoted(s.Target), "err", err)
		return
	case addr == old.Addr():
		return
	case !s.cfg.Allowed(addr):
		m.logger.Warn("target resolved outside allowed_targets, keeping the old address", "target", quoted(s.Target), "addr", addr)
		return
	case checkDestination(addr) != nil:
		m.logger.Warn("target resolved to an address no session may probe, keeping the old address", "target", quoted(s.Target), "err", checkDestination(addr))
		return
	}
	if _, err := s.pool.sockets(family(addr)); err != nil {
		m.logger.Warn("no socket for the target's new address", "target", s.Target, "err", err)
		return
	}
	dst := netip.AddrPortFrom(addr, s.port)
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.closed.Load() {
		return
	}
	s.pool.unregister(s, old)
	src := sourceFor(s.cfg, addr)
	s.mu.Lock()
	s.dst, s.src = dst, src
	s.mu.Unlock()
	s.pool.register(s, dst)
	m.logger.Info("target address changed", "target", s.Target, "old", old.Addr(), "new", addr)
}

// managerMetrics are the exporter's own series on /metrics.
type managerMetrics struct {
	sessions      *prometheus.GaugeVec
	started       *prometheus.CounterVec
	expired       *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	moduleUnknown prometheus.Counter
	sendErrors    *prometheus.CounterVec
	badReplies    *prometheus.CounterVec
	unmatched     *prometheus.CounterVec
}

func newManagerMetrics(reg prometheus.Registerer) *managerMetrics {
	mm := &managerMetrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: nameSessions, Help: "Active probe sessions.",
		}, []string{"module"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameSessionsStartedTotal, Help: "Probe sessions started by a /probe scrape.",
		}, []string{"module"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameSessionsExpiredTotal, Help: "Probe sessions closed after idle_timeout without a scrape.",
		}, []string{"module"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameSessionsRejectedTotal, Help: "/probe requests that could not start a session, by reason.",
		}, []string{"reason"}),
		moduleUnknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: nameModuleUnknownTotal, Help: "/probe requests naming a module that is not configured.",
		}),
		sendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameSendErrorsTotal, Help: "Probes whose send failed (the probe counts as lost).",
		}, []string{"module"}),
		badReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameRepliesBadDataTotal, Help: "Datagrams on probe sockets that are not STAMP replies.",
		}, []string{"module"}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameRepliesUnmatchedTotal, Help: "STAMP replies that matched no active session.",
		}, []string{"module"}),
	}
	for _, r := range []string{ReasonLimit, ReasonNotAllowed, ReasonBadTarget} {
		mm.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(mm.sessions, mm.started, mm.expired, mm.rejected, mm.moduleUnknown,
			mm.sendErrors, mm.badReplies, mm.unmatched)
	}
	return mm
}

// initModule creates a module's series at 0 so that they exist from the start.
func (mm *managerMetrics) initModule(name string) {
	mm.sessions.WithLabelValues(name)
	mm.started.WithLabelValues(name)
	mm.expired.WithLabelValues(name)
	mm.sendErrors.WithLabelValues(name)
	mm.badReplies.WithLabelValues(name)
	mm.unmatched.WithLabelValues(name)
}

// UnknownModule counts a /probe request for a module that does not exist.
func (m *Manager) UnknownModule() { m.metrics.moduleUnknown.Inc() }

// String describes a session for logs.
func (s *Session) String() string { return fmt.Sprintf("%s/%s", s.Module, s.Target) }
