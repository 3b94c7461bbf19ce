package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Path tracing defaults and limits.
const (
	// DefaultPathTraceInterval is how often each flow is traced at most,
	// when path_trace sets no interval.
	DefaultPathTraceInterval = time.Minute
	// MinPathTraceInterval is the shortest path_trace interval: the prober
	// starts at most one trace a second per address family anyway, so
	// that no router is asked for more than one ICMP message a second.
	MinPathTraceInterval = time.Second
	// DefaultPathTraceMaxHops is the highest TTL / Hop Limit of trace
	// probes when path_trace sets no max_hops.
	DefaultPathTraceMaxHops = 16
	// MaxPathTraceMaxHops is the largest max_hops: it bounds the memory
	// each traced flow keeps (a few hundred octets per hop).
	MaxPathTraceMaxHops = 64
)

// PathTrace configures per-flow path tracing: each flow of a session is
// traced, now and then, with TTL- (Hop Limit-) limited probes on the flow's
// own socket, and the ICMP Time Exceeded and Destination Unreachable
// answers (RFC 792, RFC 4443) name the hops of that flow's ECMP path.
type PathTrace struct {
	// Interval is how often each flow is traced at most (default 1m,
	// minimum 1s).
	Interval time.Duration `yaml:"interval"`
	// MaxHops is the highest TTL / Hop Limit a trace probe is sent with,
	// 1..64 (default 16).
	MaxHops int `yaml:"max_hops"`
	// OnLoss also traces a flow as soon as it loses a probe after a trace
	// that saw no loss, ahead of its interval (default true).
	OnLoss bool `yaml:"on_loss"`
}

// DefaultPathTrace returns the path_trace settings of an empty
// `path_trace: {}`.
func DefaultPathTrace() PathTrace {
	return PathTrace{Interval: DefaultPathTraceInterval, MaxHops: DefaultPathTraceMaxHops, OnLoss: true}
}

// Equal reports whether p and o are the same settings; two nil values
// (tracing off) are equal.
func (p *PathTrace) Equal(o *PathTrace) bool {
	if p == nil || o == nil {
		return p == o
	}
	return *p == *o
}

// validate checks the settings; the field of the error is below
// path_trace.
func (p *PathTrace) validate() *fieldError {
	if p.Interval < MinPathTraceInterval {
		return fieldErr("path_trace.interval", "must be at least %s, got %s",
			formatDuration(MinPathTraceInterval), formatDuration(p.Interval))
	}
	if p.MaxHops < 1 || p.MaxHops > MaxPathTraceMaxHops {
		return fieldErr("path_trace.max_hops", "must be 1..%d, got %d", MaxPathTraceMaxHops, p.MaxHops)
	}
	return nil
}

// validatePathTrace checks the module's path_trace against its prober.
func (m *Module) validatePathTrace(spec ProberSpec) *fieldError {
	if m.PathTrace == nil {
		return nil
	}
	if !spec.PathTrace {
		return fieldErr("path_trace", "is not available for prober %s", m.Prober)
	}
	return m.PathTrace.validate()
}

// UnmarshalYAML decodes path_trace settings strictly, the fields left out
// at their defaults (DefaultPathTrace), and validates them. Errors are
// *Error with paths relative to path_trace.
func (p *PathTrace) UnmarshalYAML(n *yaml.Node) error {
	v, err := newDecoder().pathTrace("", n)
	if err != nil {
		return err
	}
	*p = *v
	return nil
}

// pathTrace decodes the path_trace mapping n found at path (the key's
// line is n's) and validates it, so that each error names the line of its
// own field. A null value is nil: tracing stays off.
func (d *decoder) pathTrace(path string, n *yaml.Node) (*PathTrace, error) {
	if isNull(n) {
		return nil, nil
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, errorf(n.Line, path, "must be a mapping, got %s", kindOf(n))
	}
	ps, err := d.pairs(path, n, 0)
	if err != nil {
		return nil, err
	}
	p := DefaultPathTrace()
	lines := map[string]int{}
	for _, kv := range ps {
		name := kv.key.Value
		v := resolve(kv.value)
		var err error
		switch name {
		case "interval":
			err = decodeDuration(v, &p.Interval)
		case "max_hops":
			err = decodeInt(v, &p.MaxHops)
		case "on_loss":
			err = decodeBool(v, &p.OnLoss)
		default:
			return nil, errorf(kv.key.Line, path, "field %s not found in type config.PathTrace", name)
		}
		if err != nil {
			return nil, &Error{Line: kv.key.Line, Path: joinPath(path, name), Msg: err.Error()}
		}
		lines["path_trace."+name] = kv.key.Line
	}
	if fe := p.validate(); fe != nil {
		line, ok := lines[fe.field]
		if !ok {
			line = n.Line
		}
		return nil, &Error{Line: line, Path: joinPath(path, fe.field[len("path_trace."):]), Msg: fe.msg}
	}
	return &p, nil
}

// pathTraceField decodes the path_trace entry p of a module at path into
// m.
func (d *decoder) pathTraceField(path string, m *Module, p pair) error {
	v, err := d.pathTrace(joinPath(path, "path_trace"), p.value)
	if err != nil {
		if e, ok := err.(*Error); ok && e.Line == 0 {
			e.Line = p.key.Line
		}
		return err
	}
	m.PathTrace = v
	return nil
}

// pathTraceYAML is the form in which Config.YAML shows path_trace.
type pathTraceYAML struct {
	Interval string `yaml:"interval"`
	MaxHops  int    `yaml:"max_hops"`
	OnLoss   bool   `yaml:"on_loss"`
}

// shownPathTrace returns p as Config.YAML shows it; nil when off.
func shownPathTrace(p *PathTrace) *pathTraceYAML {
	if p == nil {
		return nil
	}
	return &pathTraceYAML{Interval: formatDuration(p.Interval), MaxHops: p.MaxHops, OnLoss: p.OnLoss}
}

// String describes the settings, as in the debug page.
func (p *PathTrace) String() string {
	if p == nil {
		return "off"
	}
	return fmt.Sprintf("interval %s, max_hops %d, on_loss %v", formatDuration(p.Interval), p.MaxHops, p.OnLoss)
}
