package config

import (
	"cmp"
	"fmt"
	"reflect"
	"strings"
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

// plainPathTrace is PathTrace without its UnmarshalYAML, for the YAML library to
// decode the fields into.
type plainPathTrace PathTrace

// UnmarshalYAML decodes path_trace settings strictly, the fields left out
// at their defaults (DefaultPathTrace), and validates them, so that each
// error names the line of its own field. Errors are *Error with paths
// below path_trace. A null path_trace never gets here: it leaves the
// module's pointer nil, and tracing off.
func (p *PathTrace) UnmarshalYAML(unmarshal func(any) error) error {
	var r nodeRef
	_ = unmarshal(&r) // cannot fail
	if n := resolve(r.n); n.Kind != yaml.MappingNode {
		return &Error{Line: n.Line, Path: "path_trace", Msg: fmt.Sprintf("must be a mapping, got %s", kindOf(n))}
	}
	n, _, err := mappingOf(unmarshal, "path_trace", reflect.TypeFor[PathTrace]())
	if err != nil {
		return underPathTrace(err, n)
	}
	v := DefaultPathTrace()
	if err := unmarshal((*plainPathTrace)(&v)); err != nil {
		return underPathTrace(fromYAML(err, "", n), n)
	}
	if fe := v.validate(); fe != nil {
		name := strings.TrimPrefix(fe.field, "path_trace.")
		return &Error{Line: keyLine(n, name, n.Line), Path: fe.field, Msg: fe.msg}
	}
	*p = v
	return nil
}

// underPathTrace puts err, found in the path_trace mapping n, below
// path_trace, at n's line when it names none.
func underPathTrace(err *Error, n *yaml.Node) *Error {
	err.Path = strings.TrimSuffix("path_trace."+err.Path, ".")
	err.Line = cmp.Or(err.Line, n.Line)
	return err
}

// pathTraceYAML is the form in which Config.YAML shows path_trace.
type pathTraceYAML struct {
	Interval string `yaml:"interval"`
	MaxHops  int    `yaml:"max_hops"`
	OnLoss   bool   `yaml:"on_loss"`
}

// MarshalYAML shows the settings as the file writes them, the interval as
// a duration string ("1m").
func (p PathTrace) MarshalYAML() (any, error) {
	return pathTraceYAML{Interval: formatDuration(p.Interval), MaxHops: p.MaxHops, OnLoss: p.OnLoss}, nil
}

// String describes the settings, as in the debug page.
func (p *PathTrace) String() string {
	if p == nil {
		return "off"
	}
	return fmt.Sprintf("interval %s, max_hops %d, on_loss %v", formatDuration(p.Interval), p.MaxHops, p.OnLoss)
}
