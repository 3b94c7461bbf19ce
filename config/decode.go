package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error, located in the YAML input where possible.
// Its text is "line L: path: message", without the parts that are unknown.
type Error struct {
	// Line is the 1-based line of the offending key or list element, or 0
	// if unknown.
	Line int
	// Path is the dotted path of the offending field, such as
	// "modules.default.flows" or "modules.x.allowed_targets[1]"; empty for
	// errors about the document as a whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error implements the error interface.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func errorf(line int, path, format string, args ...any) *Error {
	return &Error{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// joinPath appends a field name to a dotted path.
func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// Parse decodes a configuration file, fills in defaults and validates it.
//
// Decoding is strict: the input must be a single YAML document; unknown
// fields, duplicate keys and values of the wrong type are errors. At least
// one module must be defined. The error is an *Error naming the line and
// field path, such as
//
//	line 7: modules.default.flows: must be at least 1, got 0
//
// YAML syntax errors are reported with the line the YAML parser gives.
// Anchors and aliases are expanded; a document that would expand to more
// than about 260,000 mapping entries and list elements is rejected.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return nil, errorf(0, "modules", "at least one module must be defined")
	}
	if err != nil {
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, syntaxError(err)
		}
		return nil, errorf(extra.Line, "", "only one YAML document is allowed")
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, errorf(0, "modules", "at least one module must be defined")
		}
		root = doc.Content[0]
	}
	var c Config
	if err := newDecoder().config(root, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// syntaxError turns an error of the YAML parser into an *Error.
func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d: ", &line); n == 1 {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			return &Error{Line: line, Msg: rest}
		}
	}
	return &Error{Msg: msg}
}

// UnmarshalYAML decodes a configuration from a YAML node with the rules of
// Parse, so that a Config embedded in another YAML document is also decoded
// strictly, with defaults and validation. Errors are *Error.
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	var nc Config
	if err := newDecoder().config(n, &nc); err != nil {
		return err
	}
	*c = nc
	return nil
}

// UnmarshalYAML decodes a single module from a YAML mapping with the rules
// of Parse: fields left out get the defaults of DefaultModule (packet_size
// and port those of the prober), unknown fields are errors and the result
// is validated. Errors are *Error, with paths relative to the module.
func (m *Module) UnmarshalYAML(n *yaml.Node) error {
	nm, err := newDecoder().module("", n.Line, n)
	if err != nil {
		return err
	}
	*m = *nm
	return nil
}

// maxMergeDepth bounds the nesting of merge keys; decodeBudget bounds the
// number of mapping entries and list elements visited, however often
// aliases repeat them.
const (
	maxMergeDepth = 32
	decodeBudget  = 1 << 18
)

// decoder walks a YAML node tree.
type decoder struct {
	budget int
}

func newDecoder() *decoder {
	return &decoder{budget: decodeBudget}
}

// charge accounts for visiting n nodes.
func (d *decoder) charge(n int, line int, path string) error {
	d.budget -= n
	if d.budget < 0 {
		return errorf(line, path, "document too large after expanding aliases")
	}
	return nil
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// isNull reports whether n is absent or a YAML null.
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindOf describes the kind of a node for error messages.
func kindOf(n *yaml.Node) string {
	switch resolve(n).Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", resolve(n).Value)
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

// pair is one entry of a mapping.
type pair struct {
	key, value *yaml.Node
}

// pairs returns the entries of mapping n, with merge keys ("<<") expanded:
// keys written in n win over merged ones, and among merged mappings the
// earlier wins. Keys must be scalars and must not repeat in n.
func (d *decoder) pairs(path string, n *yaml.Node, depth int) ([]pair, error) {
	if depth > maxMergeDepth {
		return nil, errorf(n.Line, path, "merge keys nested too deeply")
	}
	if err := d.charge(len(n.Content)/2+1, n.Line, path); err != nil {
		return nil, err
	}
	var (
		own    []pair
		seen   = map[string]*yaml.Node{}
		merged []pair
		mseen  = map[string]bool{}
	)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, errorf(k.Line, path, "mapping key must be a scalar, got %s", kindOf(k))
		}
		if k.ShortTag() == "!!merge" {
			var srcs []*yaml.Node
			switch mv := resolve(v); mv.Kind {
			case yaml.MappingNode:
				srcs = append(srcs, mv)
			case yaml.SequenceNode:
				for _, e := range mv.Content {
					if e = resolve(e); e.Kind != yaml.MappingNode {
						return nil, errorf(k.Line, path, "merge key value must be a mapping or a sequence of mappings, got a sequence containing %s", kindOf(e))
					}
					srcs = append(srcs, e)
				}
			default:
				return nil, errorf(k.Line, path, "merge key value must be a mapping or a sequence of mappings, got %s", kindOf(mv))
			}
			for _, src := range srcs {
				ps, err := d.pairs(path, src, depth+1)
				if err != nil {
					return nil, err
				}
				for _, p := range ps {
					if !mseen[p.key.Value] {
						mseen[p.key.Value] = true
						merged = append(merged, p)
					}
				}
			}
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			return nil, errorf(k.Line, path, "mapping key %q already defined at line %d", k.Value, prev.Line)
		}
		seen[k.Value] = k
		own = append(own, pair{k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; !ok {
			own = append(own, p)
		}
	}
	return own, nil
}

// config decodes the top-level mapping n into c and validates it.
func (d *decoder) config(n *yaml.Node, c *Config) error {
	if isNull(n) {
		return errorf(0, "modules", "at least one module must be defined")
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return errorf(n.Line, "", "configuration must be a mapping, got %s", kindOf(n))
	}
	ps, err := d.pairs("", n, 0)
	if err != nil {
		return err
	}
	var modules *pair
	for i, p := range ps {
		switch p.key.Value {
		case "modules":
			modules = &ps[i]
		default:
			return errorf(p.key.Line, "", "field %s not found in type config.Config", p.key.Value)
		}
	}
	if modules == nil {
		return errorf(n.Line, "modules", "at least one module must be defined")
	}
	if isNull(modules.value) {
		return errorf(modules.key.Line, "modules", "at least one module must be defined")
	}
	mn := resolve(modules.value)
	if mn.Kind != yaml.MappingNode {
		return errorf(modules.key.Line, "modules", "must be a mapping of module names to modules, got %s", kindOf(mn))
	}
	ps, err = d.pairs("modules", mn, 0)
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		return errorf(modules.key.Line, "modules", "at least one module must be defined")
	}
	c.Modules = make(map[string]*Module, len(ps))
	for _, p := range ps {
		name := p.key.Value
		if name == "" || p.key.ShortTag() == "!!null" {
			return errorf(p.key.Line, "modules", "module name must not be empty")
		}
		m, err := d.module(joinPath("modules", name), p.key.Line, p.value)
		if err != nil {
			return err
		}
		c.Modules[name] = m
	}
	return nil
}

// module decodes a module mapping n found at path (declared on line) with
// defaults, and validates it.
func (d *decoder) module(path string, line int, n *yaml.Node) (*Module, error) {
	m := DefaultModule()
	set := map[string]pair{}
	if !isNull(n) {
		n = resolve(n)
		if n.Kind != yaml.MappingNode {
			return nil, errorf(line, path, "module must be a mapping, got %s", kindOf(n))
		}
		ps, err := d.pairs(path, n, 0)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if err := d.field(path, &m, p); err != nil {
				return nil, err
			}
			if !isNull(p.value) {
				set[p.key.Value] = p
			}
		}
	}
	if spec, ok := LookupProber(m.Prober); ok {
		if _, ok := set["packet_size"]; !ok {
			m.PacketSize = spec.DefaultPacketSize
		}
		if _, ok := set["port"]; !ok {
			m.Port = spec.DefaultPort
		}
	}
	if fe := m.validate(); fe != nil {
		errLine := line
		if p, ok := set[fe.field]; ok {
			errLine = p.key.Line
			if seq := resolve(p.value); fe.index >= 0 && seq.Kind == yaml.SequenceNode && fe.index < len(seq.Content) {
				errLine = seq.Content[fe.index].Line
			}
		}
		return nil, &Error{Line: errLine, Path: fe.path(path), Msg: fe.msg}
	}
	return &m, nil
}

// field decodes one entry of a module mapping into m. A null value leaves
// the field at its default.
func (d *decoder) field(path string, m *Module, p pair) error {
	name := p.key.Value
	fpath := joinPath(path, name)
	v := resolve(p.value)
	var err error
	switch name {
	case "prober":
		err = decodeString(v, &m.Prober)
	case "interval":
		err = decodeDuration(v, &m.Interval)
	case "timeout":
		err = decodeDuration(v, &m.Timeout)
	case "window":
		err = decodeDuration(v, &m.Window)
	case "flows":
		err = decodeInt(v, &m.Flows)
	case "source_port_range":
		err = decodeString(v, &m.SourcePortRange)
	case "flow_metrics":
		err = decodeBool(v, &m.FlowMetrics)
	case "dscp":
		err = decodeInt(v, &m.DSCP)
	case "packet_size":
		err = decodeInt(v, &m.PacketSize)
	case "port":
		err = decodeInt(v, &m.Port)
	case "ip_protocol":
		err = decodeString(v, &m.IPProtocol)
	case "ip_protocol_fallback":
		err = decodeBool(v, &m.IPProtocolFallback)
	case "source_ip_address":
		err = decodeString(v, &m.SourceIPAddress)
	case "auth_key_file":
		err = decodeString(v, &m.AuthKeyFile)
	case "idle_timeout":
		err = decodeDuration(v, &m.IdleTimeout)
	case "path_trace":
		return d.pathTraceField(path, m, p)
	case "rtt_buckets":
		return d.sequence(fpath, p, func(e *yaml.Node) error {
			var f float64
			if err := decodeFloat(e, &f); err != nil {
				return err
			}
			m.RTTBuckets = append(m.RTTBuckets, f)
			return nil
		}, func() { m.RTTBuckets = nil })
	case "allowed_targets":
		return d.sequence(fpath, p, func(e *yaml.Node) error {
			var s string
			if isNull(e) {
				return fmt.Errorf("must be a string, got null")
			}
			if err := decodeString(e, &s); err != nil {
				return err
			}
			m.AllowedTargets = append(m.AllowedTargets, s)
			return nil
		}, func() { m.AllowedTargets = nil })
	default:
		return errorf(p.key.Line, path, "field %s not found in type config.Module", name)
	}
	if err != nil {
		return &Error{Line: p.key.Line, Path: fpath, Msg: err.Error()}
	}
	return nil
}

// sequence decodes the list p.value element by element with elem, after
// calling reset. A null value leaves the list empty.
func (d *decoder) sequence(path string, p pair, elem func(*yaml.Node) error, reset func()) error {
	reset()
	v := resolve(p.value)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return errorf(p.key.Line, path, "must be a sequence, got %s", kindOf(v))
	}
	if err := d.charge(len(v.Content), p.key.Line, path); err != nil {
		return err
	}
	for i, e := range v.Content {
		if err := elem(resolve(e)); err != nil {
			return errorf(e.Line, fmt.Sprintf("%s[%d]", path, i), "%s", err)
		}
	}
	return nil
}

// The decode functions below decode a scalar node into a Go value. A null
// node leaves the value unchanged. Errors are plain messages without
// location.

func decodeString(n *yaml.Node, s *string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a string, got %s", kindOf(n))
	}
	*s = n.Value
	return nil
}

func decodeDuration(n *yaml.Node, dur *time.Duration) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a duration such as \"100ms\", got %s", kindOf(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q", n.Value)
	}
	*dur = v
	return nil
}

func decodeInt(n *yaml.Node, i *int) error {
	if isNull(n) {
		return nil
	}
	var v int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		return fmt.Errorf("must be an integer, got %s", kindOf(n))
	}
	*i = v
	return nil
}

func decodeFloat(n *yaml.Node, f *float64) error {
	if isNull(n) {
		return fmt.Errorf("must be a number, got null")
	}
	var v float64
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") || n.Decode(&v) != nil {
		return fmt.Errorf("must be a number, got %s", kindOf(n))
	}
	*f = v
	return nil
}

func decodeBool(n *yaml.Node, b *bool) error {
	if isNull(n) {
		return nil
	}
	var v bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&v) != nil {
		return fmt.Errorf("must be true or false, got %s", kindOf(n))
	}
	*b = v
	return nil
}
