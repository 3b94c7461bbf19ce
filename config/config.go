package config

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// Prober names accepted in a module's prober field.
const (
	// ProberSTAMP probes with STAMP (RFC 8762) test packets. It is the default.
	ProberSTAMP = "stamp"
	// ProberLLAMA probes with the protobuf-encoded probes of Dropbox LLAMA.
	ProberLLAMA = "llama"
	// ProberICMP probes with ICMP and ICMPv6 echo (RFC 792, RFC 4443).
	ProberICMP = "icmp"
	// ProberTCP probes with TCP handshakes to the target's port.
	ProberTCP = "tcp"
)

// IP protocol names accepted in a module's ip_protocol field.
const (
	// IPv4 prefers IPv4 addresses when resolving targets.
	IPv4 = "ip4"
	// IPv6 prefers IPv6 addresses when resolving targets. It is the default.
	IPv6 = "ip6"
)

// Packet size limits, in bytes of UDP payload.
const (
	// MinPacketSizeSTAMP is the size of the smallest STAMP test packet
	// (unauthenticated mode, RFC 8762 section 4.2.1).
	MinPacketSizeSTAMP = 44
	// MinPacketSizeLLAMA is the smallest payload accepted for the legacy
	// LLAMA prober: the encoded size of the smallest legacy probe, taken as
	// 64 bytes. A probe is a protobuf message carrying a signature, the ToS
	// byte and nanosecond timestamps; 64 bytes holds all of them at their
	// largest varint encodings, and the prober pads probes up to the module's
	// packet_size.
	MinPacketSizeLLAMA = 64
	// MinPacketSizeAuth is the smallest payload of a STAMP probe in
	// authenticated mode (RFC 8762 section 4.2.2): 112 octets.
	MinPacketSizeAuth = 112
	// MaxPacketSize is the largest UDP payload that fits in an IPv4 datagram
	// (65535 - 20 bytes IPv4 header - 8 bytes UDP header).
	MaxPacketSize = 65507
)

// Other defaults and limits.
const (
	// DefaultPortSTAMP is the destination port of stamp modules whose
	// targets name no port: the Session-Reflector port of RFC 8762.
	DefaultPortSTAMP = 862
	// DefaultPortLLAMA is the destination port of llama modules whose
	// targets name no port.
	DefaultPortLLAMA = 8100
	// DefaultPacketSizeLLAMA is the default payload size, in bytes, of llama
	// modules.
	DefaultPacketSizeLLAMA = 1028
	// MaxFlows is the largest number of flows (source ports) a module may use.
	MaxFlows = 1024
	// MaxDSCP is the largest DSCP value (6 bits).
	MaxDSCP = 63
)

// DefaultRTTBuckets are the round-trip time histogram buckets, in seconds,
// used when a module sets no rtt_buckets: 20 exponential buckets from 50µs
// doubling up to about 26.2s. It must not be modified.
var DefaultRTTBuckets = prometheus.ExponentialBuckets(50e-6, 2, 20)

// Config is the whole configuration file.
type Config struct {
	// Modules maps module names (the module URL parameter of a probe) to
	// their settings. Parse guarantees at least one module, non-empty
	// names and non-nil values.
	Modules map[string]*Module `yaml:"modules"`
}

// Module describes how targets are probed. The zero value is not valid; use
// DefaultModule, or Parse a configuration file.
type Module struct {
	// Prober is the probe protocol, a name registered with RegisterProber:
	// "stamp" (default), "llama", "icmp" or "tcp".
	Prober string `yaml:"prober"`
	// Interval is the time between two probes sent to one target
	// (default 100ms).
	Interval time.Duration `yaml:"interval"`
	// Timeout is how long to wait for a reply; a probe answered later or
	// not at all counts as lost (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// Window is the length of the summary window served on each scrape
	// (default 30s). It is at least Interval.
	Window time.Duration `yaml:"window"`
	// Flows is the number of distinct UDP source ports, and so of ECMP
	// paths, used per target: 1..1024 (default 8).
	Flows int `yaml:"flows"`
	// SourcePortRange is "first-last", the inclusive range of fixed source
	// ports to use instead of ephemeral ones. It must hold at least Flows
	// ports. Empty (default) means ephemeral ports. Parsed into SourcePorts.
	SourcePortRange string `yaml:"source_port_range"`
	// FlowMetrics enables per-flow series, one per source port
	// (default false).
	FlowMetrics bool `yaml:"flow_metrics"`
	// DSCP is the Differentiated Services code point set on probes,
	// 0..63 (default 0). The reflector echoes it.
	DSCP int `yaml:"dscp"`
	// PacketSize is the probe's payload size in octets, within the limits
	// of the prober's ProberSpec; its default comes from there too (44 for
	// stamp, 1028 for llama). 0 for protocols without payload (tcp).
	PacketSize int `yaml:"packet_size"`
	// Port is the destination port used when a target has none, 1..65535;
	// its default is the prober's ProberSpec.DefaultPort (862 for stamp,
	// 8100 for llama). 0 when the protocol has no ports (icmp) or when
	// targets must name theirs (tcp without a port).
	Port int `yaml:"port"`
	// IPProtocol is the preferred address family when resolving targets:
	// "ip6" (default) or "ip4".
	IPProtocol string `yaml:"ip_protocol"`
	// IPProtocolFallback allows the other family when the target has no
	// address of the preferred one (default true).
	IPProtocolFallback bool `yaml:"ip_protocol_fallback"`
	// SourceIPAddress is the local address probes are sent from; empty
	// (default) lets the kernel choose. Parsed into SourceIP.
	SourceIPAddress string `yaml:"source_ip_address"`
	// IdleTimeout stops probing a target that has not been scraped for
	// this long (default 5m). It is at least Timeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RTTBuckets are the round-trip time histogram buckets in seconds,
	// positive and strictly increasing. Empty (default) means
	// DefaultRTTBuckets; see Buckets.
	RTTBuckets []float64 `yaml:"rtt_buckets"`
	// AllowedTargets lists the CIDR prefixes (or single IP addresses) the
	// module may probe. Empty (default) allows any target. Parsed into
	// AllowedPrefixes.
	AllowedTargets []string `yaml:"allowed_targets"`
	// AuthKeyFile names a file whose content, without surrounding white
	// space, is the shared key of STAMP authenticated mode (RFC 8762
	// section 4.2.2, HMAC-SHA-256). With it, probes are authenticated and
	// only replies with a valid HMAC count; packet_size must be at least
	// 112. Read at load and at every reload; relative to the working
	// directory.
	AuthKeyFile string `yaml:"auth_key_file,omitempty"`
	// PathTrace, when set, traces each flow's path (see PathTrace); nil
	// (default, path_trace absent) leaves tracing off.
	PathTrace *PathTrace `yaml:"path_trace,omitempty"`

	// AuthKey is the content of AuthKeyFile; nil without one. It is never
	// shown (Config.YAML shows the file name only).
	AuthKey []byte `yaml:"-"`
	// SourcePorts is SourcePortRange parsed: first and last port,
	// inclusive. Both are 0 when SourcePortRange is empty.
	SourcePorts [2]uint16 `yaml:"-"`
	// SourceIP is SourceIPAddress parsed; the zero (invalid) Addr when
	// SourceIPAddress is empty.
	SourceIP netip.Addr `yaml:"-"`
	// AllowedPrefixes is AllowedTargets parsed, in the same order, with
	// host bits cleared; single addresses become /32 or /128 prefixes.
	AllowedPrefixes []netip.Prefix `yaml:"-"`
}

// DefaultModule returns a stamp module with every field at its default.
// It is valid as is.
func DefaultModule() Module {
	return Module{
		Prober:             ProberSTAMP,
		Interval:           100 * time.Millisecond,
		Timeout:            time.Second,
		Window:             30 * time.Second,
		Flows:              8,
		PacketSize:         MinPacketSizeSTAMP,
		Port:               DefaultPortSTAMP,
		IPProtocol:         IPv6,
		IPProtocolFallback: true,
		IdleTimeout:        5 * time.Minute,
	}
}

// Default returns the configuration used when no file is given: a single
// module named "default" with the settings of DefaultModule.
func Default() *Config {
	m := DefaultModule()
	return &Config{Modules: map[string]*Module{"default": &m}}
}

// Load reads and parses the configuration file filename. Read errors are
// returned as they come from os.ReadFile; parse and validation errors (see
// Parse) are prefixed with the file name, and errors.As still finds their
// *Error.
func Load(filename string) (*Config, error) {
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	return c, nil
}

// Allowed reports whether the module may probe a: true if AllowedPrefixes
// is empty or one of them contains a. An IPv4-mapped IPv6 address is also
// checked as the IPv4 address it maps, and a zone is ignored. The module
// must have been validated (Parse and Validate fill AllowedPrefixes).
func (m *Module) Allowed(a netip.Addr) bool {
	if len(m.AllowedPrefixes) == 0 {
		return true
	}
	if !a.IsValid() {
		return false
	}
	a = a.WithZone("")
	u := a.Unmap()
	for _, p := range m.AllowedPrefixes {
		if p.Contains(a) || p.Contains(u) {
			return true
		}
	}
	return false
}

// Buckets returns the round-trip time histogram buckets in seconds: a copy
// of RTTBuckets, or of DefaultRTTBuckets when RTTBuckets is empty.
func (m *Module) Buckets() []float64 {
	if len(m.RTTBuckets) == 0 {
		return slices.Clone(DefaultRTTBuckets)
	}
	return slices.Clone(m.RTTBuckets)
}

// Equal reports whether m and o have the same effective configuration, so
// that a prober running with m need not be restarted for o. Empty
// rtt_buckets equals an explicit DefaultRTTBuckets; source ports, source
// address and allowed targets are compared in parsed form (so "10.0.0.1"
// equals "10.0.0.1/32", and the order of allowed targets does not matter),
// or as written if they do not parse. Two nil modules are equal.
func (m *Module) Equal(o *Module) bool {
	if m == nil || o == nil {
		return m == o
	}
	return reflect.DeepEqual(m.canonical(), o.canonical())
}

// canonical returns a copy of m in which the equivalent ways of writing a
// setting are made one, and the fields parsed from others are cleared. Equal
// compares the copies as a whole, so that a field added to Module is
// compared without being listed anywhere: only a field with several
// spellings of one value needs a line here.
func (m *Module) canonical() Module {
	c := *m
	c.SourcePorts, c.SourceIP, c.AllowedPrefixes = [2]uint16{}, netip.Addr{}, nil
	if len(c.RTTBuckets) == 0 {
		c.RTTBuckets = DefaultRTTBuckets
	}
	if len(c.AuthKey) == 0 {
		c.AuthKey = nil
	}
	if p, err := parsePortRange(m.SourcePortRange); err == nil && p[0] != 0 {
		c.SourcePortRange = fmt.Sprintf("%d-%d", p[0], p[1])
	}
	if a, err := parseSourceIP(m.SourceIPAddress); err == nil && a.IsValid() {
		c.SourceIPAddress = a.String()
	}
	if ps, ok := normalizedPrefixes(m.AllowedTargets); ok {
		c.AllowedTargets = nil
		for _, p := range ps {
			c.AllowedTargets = append(c.AllowedTargets, p.String())
		}
	}
	return c
}

// normalizedPrefixes parses targets into a sorted, duplicate-free list. ok
// is false if one of them does not parse.
func normalizedPrefixes(targets []string) (ps []netip.Prefix, ok bool) {
	for _, t := range targets {
		p, err := parseTarget(t)
		if err != nil {
			return nil, false
		}
		ps = append(ps, p)
	}
	slices.SortFunc(ps, netip.Prefix.Compare)
	return slices.Compact(ps), true
}

// Validate checks the module against the rules of the configuration file
// and fills SourcePorts, SourceIP and AllowedPrefixes. It does not apply
// defaults. The error, if any, is an *Error whose Path is the offending
// field (such as "flows" or "allowed_targets[1]") and whose Line is 0.
func (m *Module) Validate() error {
	if fe := m.validate(); fe != nil {
		return &Error{Path: fe.path(), Msg: fe.msg}
	}
	return nil
}

// finish gives packet_size and port the defaults of the module's prober
// where the file does not set them (fields), then validates the module.
func finish(m Module, n *yaml.Node, fields map[string]yaml.Node) (*Module, *Error) {
	if spec, ok := LookupProber(m.Prober); ok {
		if v := fields["packet_size"]; isNull(&v) {
			m.PacketSize = spec.DefaultPacketSize
		}
		if v := fields["port"]; isNull(&v) {
			m.Port = spec.DefaultPort
		}
	}
	if fe := m.validate(); fe != nil {
		return nil, locate(fe, n, fields)
	}
	return &m, nil
}

// fieldError is a validation error of one module field, or of one element
// (index >= 0) of a list field.
type fieldError struct {
	field string
	index int
	msg   string
}

// path returns the field's path in its module, such as "rtt_buckets[2]".
func (fe *fieldError) path() string {
	p := fe.field
	if fe.index >= 0 {
		p += "[" + strconv.Itoa(fe.index) + "]"
	}
	return p
}

func fieldErr(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, index: -1, msg: fmt.Sprintf(format, args...)}
}

// validate checks m, fills its parsed fields and returns the first error in
// field order. Each step checks a group of fields and returns its first
// error, so the steps run in that order. The parsed fields are cleared first
// and set only once every field is valid, so that a module that fails
// validation has none of them.
func (m *Module) validate() *fieldError {
	m.SourcePorts, m.SourceIP, m.AllowedPrefixes, m.AuthKey = [2]uint16{}, netip.Addr{}, nil, nil
	spec, ok := LookupProber(m.Prober)
	if !ok {
		return fieldErr("prober", "%s", unknownProber(m.Prober))
	}
	if fe := m.validateSchedule(); fe != nil {
		return fe
	}
	ports, fe := m.validateFlows()
	if fe != nil {
		return fe
	}
	if fe := m.validatePackets(spec); fe != nil {
		return fe
	}
	srcIP, fe := m.validateAddressing()
	if fe != nil {
		return fe
	}
	if fe := m.validateIdleTimeout(); fe != nil {
		return fe
	}
	if fe := m.validateRTTBuckets(); fe != nil {
		return fe
	}
	prefixes, fe := m.parseAllowedTargets()
	if fe != nil {
		return fe
	}
	key, fe := m.readAuthKey(spec)
	if fe != nil {
		return fe
	}
	m.SourcePorts, m.SourceIP, m.AllowedPrefixes, m.AuthKey = ports, srcIP, prefixes, key
	return nil
}

// validateSchedule checks interval, timeout and window: the first two must be
// positive, and a window shorter than one interval could hold no probe.
func (m *Module) validateSchedule() *fieldError {
	if m.Interval <= 0 {
		return fieldErr("interval", "must be positive, got %s", formatDuration(m.Interval))
	}
	if m.Timeout <= 0 {
		return fieldErr("timeout", "must be positive, got %s", formatDuration(m.Timeout))
	}
	if m.Window < m.Interval {
		return fieldErr("window", "must be at least interval (%s), got %s",
			formatDuration(m.Interval), formatDuration(m.Window))
	}
	return nil
}

// validateFlows checks flows and source_port_range and returns the parsed
// port range. Each flow needs a source port of its own, so a range, when
// given, must hold at least flows ports.
func (m *Module) validateFlows() ([2]uint16, *fieldError) {
	if m.Flows < 1 {
		return [2]uint16{}, fieldErr("flows", "must be at least 1, got %d", m.Flows)
	}
	if m.Flows > MaxFlows {
		return [2]uint16{}, fieldErr("flows", "must be at most %d, got %d", MaxFlows, m.Flows)
	}
	ports, err := parsePortRange(m.SourcePortRange)
	if err != nil {
		return [2]uint16{}, fieldErr("source_port_range", "%s", err)
	}
	if n := int(ports[1]) - int(ports[0]) + 1; ports[0] != 0 && n < m.Flows {
		return [2]uint16{}, fieldErr("source_port_range", "port range %q has %d ports, fewer than flows (%d)",
			m.SourcePortRange, n, m.Flows)
	}
	return ports, nil
}

// validatePackets checks what the module's probes carry and how they are
// sent: dscp, then packet_size and port against the limits of the
// module's protocol, then path_trace.
func (m *Module) validatePackets(spec ProberSpec) *fieldError {
	if m.DSCP < 0 || m.DSCP > MaxDSCP {
		return fieldErr("dscp", "must be 0..%d, got %d", MaxDSCP, m.DSCP)
	}
	if fe := m.validateSizeAndPort(spec); fe != nil {
		return fe
	}
	return m.validatePathTrace(spec)
}

// validateAddressing checks ip_protocol and source_ip_address and returns the
// parsed source address (the zero Addr when none is given).
func (m *Module) validateAddressing() (netip.Addr, *fieldError) {
	if m.IPProtocol != IPv4 && m.IPProtocol != IPv6 {
		return netip.Addr{}, fieldErr("ip_protocol", "must be %q or %q, got %q", IPv4, IPv6, m.IPProtocol)
	}
	srcIP, err := parseSourceIP(m.SourceIPAddress)
	if err != nil {
		return netip.Addr{}, fieldErr("source_ip_address", "%s", err)
	}
	return srcIP, nil
}

// validateIdleTimeout checks idle_timeout, how long a session probes without
// being scraped: it must be positive and at least timeout.
func (m *Module) validateIdleTimeout() *fieldError {
	if m.IdleTimeout <= 0 {
		return fieldErr("idle_timeout", "must be positive, got %s", formatDuration(m.IdleTimeout))
	}
	if m.IdleTimeout < m.Timeout {
		return fieldErr("idle_timeout", "must be at least timeout (%s), got %s",
			formatDuration(m.Timeout), formatDuration(m.IdleTimeout))
	}
	return nil
}

// validateRTTBuckets checks that rtt_buckets are finite, positive and
// strictly increasing, as histogram bucket bounds must be; the error names
// the first bad bucket's index.
func (m *Module) validateRTTBuckets() *fieldError {
	for i, b := range m.RTTBuckets {
		fe := &fieldError{field: "rtt_buckets", index: i}
		switch {
		case math.IsNaN(b) || math.IsInf(b, 0):
			fe.msg = fmt.Sprintf("must be a finite number, got %v", b)
		case b <= 0:
			fe.msg = fmt.Sprintf("must be positive, got %v", b)
		case i > 0 && b <= m.RTTBuckets[i-1]:
			fe.msg = fmt.Sprintf("must be greater than the previous bucket (%v), got %v", m.RTTBuckets[i-1], b)
		default:
			continue
		}
		return fe
	}
	return nil
}

// parseAllowedTargets parses allowed_targets into prefixes, nil when the list
// is empty; the error names the first bad entry's index.
func (m *Module) parseAllowedTargets() ([]netip.Prefix, *fieldError) {
	var prefixes []netip.Prefix
	for i, t := range m.AllowedTargets {
		p, err := parseTarget(t)
		if err != nil {
			return nil, &fieldError{field: "allowed_targets", index: i, msg: err.Error()}
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, nil
}

// readAuthKey reads auth_key_file, when given, and returns the key (nil
// without one). Authenticated mode needs a prober that supports it and
// packets large enough for the HMAC, so packet_size is checked again here.
func (m *Module) readAuthKey(spec ProberSpec) ([]byte, *fieldError) {
	if m.AuthKeyFile == "" {
		return nil, nil
	}
	key, err := ReadKeyFile(m.AuthKeyFile)
	if err != nil {
		return nil, fieldErr("auth_key_file", "%s", err)
	}
	if spec.MinPacketSizeAuth == 0 {
		return nil, fieldErr("auth_key_file", "authenticated mode needs prober %s", authProbers())
	}
	if m.PacketSize < spec.MinPacketSizeAuth {
		return nil, fieldErr("packet_size", "must be at least %d in authenticated mode (auth_key_file), got %d", spec.MinPacketSizeAuth, m.PacketSize)
	}
	return key, nil
}

// validateSizeAndPort checks packet_size and port against the limits of the
// module's protocol.
func (m *Module) validateSizeAndPort(spec ProberSpec) *fieldError {
	switch {
	case spec.MaxPacketSize == 0 && m.PacketSize != 0:
		return fieldErr("packet_size", "is not used by prober %s, got %d", m.Prober, m.PacketSize)
	case spec.MaxPacketSize != 0 && (m.PacketSize < spec.MinPacketSize || m.PacketSize > spec.MaxPacketSize):
		return fieldErr("packet_size", "must be %d..%d for prober %s, got %d",
			spec.MinPacketSize, spec.MaxPacketSize, m.Prober, m.PacketSize)
	case !spec.UsesPort && m.Port != 0:
		return fieldErr("port", "is not used by prober %s, got %d", m.Prober, m.Port)
	case spec.UsesPort && spec.DefaultPort == 0 && m.Port == 0:
		return nil // targets name their port
	case spec.UsesPort && (m.Port < 1 || m.Port > 65535):
		return fieldErr("port", "must be 1..65535, got %d", m.Port)
	}
	return nil
}

// ReadKeyFile returns the content of a key file without surrounding white
// space. It returns the read error, or an error for an empty key.
func ReadKeyFile(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	key := bytes.TrimSpace(b)
	if len(key) == 0 {
		return nil, fmt.Errorf("key file %s is empty", name)
	}
	return key, nil
}

// parsePortRange parses "first-last". The empty string gives {0, 0}.
func parsePortRange(s string) ([2]uint16, error) {
	if s == "" {
		return [2]uint16{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	first, errA := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	last, errB := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if !ok || errA != nil || errB != nil || first == 0 || last == 0 {
		return [2]uint16{}, fmt.Errorf("invalid port range %q: want \"first-last\" with ports 1..65535", s)
	}
	if first > last {
		return [2]uint16{}, fmt.Errorf("invalid port range %q: first port greater than last", s)
	}
	return [2]uint16{uint16(first), uint16(last)}, nil
}

// parseSourceIP parses a source address. The empty string gives the zero
// Addr.
func parseSourceIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	}
	return a, nil
}

// parseTarget parses an allowed target: a CIDR prefix, or a single address
// taken as a full-length prefix. Host bits are cleared.
func parseTarget(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP address %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// formatDuration formats d like time.Duration.String, without the zero
// trailing units: "5m" instead of "5m0s", "1h" instead of "1h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// shown returns the module as Config.YAML shows it: encoded by the YAML
// library, which leaves out the fields tagged "-" (parsed forms and the
// authentication key), with durations written as in the file. A secret
// setting added to Module must be tagged "-" or redacted here.
func (m *Module) shown() (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode((*plainModule)(m)); err != nil {
		return nil, err
	}
	v := reflect.ValueOf(m).Elem()
	for f := range v.Type().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if d, ok := v.FieldByIndex(f.Index).Interface().(time.Duration); ok {
			if _, val := entry(&n, name); val != nil {
				val.Value = formatDuration(d) // "5m", where the library writes "5m0s"
			}
		}
	}
	return &n, nil
}

// YAML returns the configuration as YAML, for display on the /config
// endpoint: every field of every module as in effect after defaults were
// applied (an empty rtt_buckets stands for DefaultRTTBuckets), durations as
// strings such as "100ms" or "5m", modules sorted by name.
// The output parses back (with Parse) into an equal configuration. Secret
// values, should any be added, are redacted. The error comes from the YAML
// encoder and is not expected in practice.
func (c *Config) YAML() ([]byte, error) {
	if c == nil {
		c = &Config{}
	}
	modules := map[string]*yaml.Node{}
	for name, m := range c.Modules {
		if m != nil {
			n, err := m.shown()
			if err != nil {
				return nil, err
			}
			modules[name] = n
		}
	}
	return yaml.Marshal(map[string]any{"modules": modules})
}
