package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.yaml.in/yaml/v3"
)

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v\ninput:\n%s", err, s)
	}
	return c
}

func mustLoad(t *testing.T, name string) *Config {
	t.Helper()
	c, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestDefaultModuleIsValid(t *testing.T) {
	m := DefaultModule()
	if err := m.Validate(); err != nil {
		t.Fatalf("DefaultModule().Validate() = %v", err)
	}
	if m.Prober != "stamp" || m.Interval != 100*time.Millisecond || m.Timeout != time.Second ||
		m.Window != 30*time.Second || m.Flows != 8 || m.SourcePortRange != "" || m.FlowMetrics ||
		m.DSCP != 0 || m.PacketSize != 44 || m.Port != 862 || m.IPProtocol != "ip6" ||
		!m.IPProtocolFallback || m.SourceIPAddress != "" || m.IdleTimeout != 5*time.Minute ||
		m.RTTBuckets != nil || m.AllowedTargets != nil {
		t.Errorf("DefaultModule() = %+v", m)
	}
	c := Default()
	if len(c.Modules) != 1 || !c.Modules["default"].Equal(&m) {
		t.Errorf("Default() = %+v", c)
	}
}

func TestDefaultRTTBuckets(t *testing.T) {
	b := DefaultRTTBuckets
	if len(b) != 20 || b[0] != 50e-6 || b[19] < 26 || b[19] > 26.3 {
		t.Errorf("DefaultRTTBuckets = %v", b)
	}
}

func TestLoadGood(t *testing.T) {
	c := mustLoad(t, "good.yml")
	if len(c.Modules) != 2 {
		t.Fatalf("got %d modules, want 2", len(c.Modules))
	}
	def := DefaultModule()
	if m := c.Modules["default"]; !m.Equal(&def) {
		t.Errorf("default = %+v, want %+v", m, def)
	}
	want := DefaultModule()
	want.Prober = "llama"
	want.Port = 8100
	want.PacketSize = 1028
	if m := c.Modules["llama_legacy"]; !m.Equal(&want) {
		t.Errorf("llama_legacy = %+v, want %+v", m, want)
	}
}

func TestLoadFull(t *testing.T) {
	c := mustLoad(t, "full.yml")
	m := c.Modules["dc1"]
	if m == nil {
		t.Fatal("module dc1 missing")
	}
	if m.Interval != 250*time.Millisecond || m.Timeout != 2*time.Second || m.Window != time.Minute ||
		m.Flows != 4 || !m.FlowMetrics || m.DSCP != 46 || m.PacketSize != 1400 || m.Port != 4862 ||
		m.IPProtocol != "ip4" || m.IPProtocolFallback || m.IdleTimeout != time.Hour {
		t.Errorf("dc1 = %+v", m)
	}
	if m.SourcePorts != [2]uint16{40000, 40007} {
		t.Errorf("SourcePorts = %v", m.SourcePorts)
	}
	if m.SourceIP != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("SourceIP = %v", m.SourceIP)
	}
	wantPrefixes := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("198.51.100.7/32"),
	}
	if !slices.Equal(m.AllowedPrefixes, wantPrefixes) {
		t.Errorf("AllowedPrefixes = %v, want %v", m.AllowedPrefixes, wantPrefixes)
	}
	if want := []float64{0.0001, 0.001, 0.01, 0.1, 1}; !slices.Equal(m.Buckets(), want) {
		t.Errorf("Buckets() = %v, want %v", m.Buckets(), want)
	}
	l := c.Modules["legacy"]
	if l.Port != DefaultPortLLAMA || l.PacketSize != DefaultPacketSizeLLAMA || l.Interval != time.Second || l.Flows != 1 {
		t.Errorf("legacy = %+v", l)
	}
}

func TestParseGood(t *testing.T) {
	def := DefaultModule()
	for _, tc := range []struct {
		name  string
		input string
		check func(t *testing.T, c *Config)
	}{
		{
			name:  "empty mapping gets defaults",
			input: "modules:\n  foo: {}\n",
			check: func(t *testing.T, c *Config) {
				if !c.Modules["foo"].Equal(&def) {
					t.Errorf("foo = %+v", c.Modules["foo"])
				}
			},
		},
		{
			name:  "null module gets defaults",
			input: "modules:\n  foo:\n  bar: ~\n",
			check: func(t *testing.T, c *Config) {
				if !c.Modules["foo"].Equal(&def) || !c.Modules["bar"].Equal(&def) {
					t.Errorf("modules = %+v", c.Modules)
				}
			},
		},
		{
			name:  "null field keeps default",
			input: "modules:\n  foo:\n    flows: ~\n    rtt_buckets:\n    port: null\n",
			check: func(t *testing.T, c *Config) {
				if !c.Modules["foo"].Equal(&def) {
					t.Errorf("foo = %+v", c.Modules["foo"])
				}
			},
		},
		{
			name:  "llama defaults do not override explicit values",
			input: "modules:\n  l:\n    prober: llama\n    port: 9000\n    packet_size: 64\n",
			check: func(t *testing.T, c *Config) {
				if m := c.Modules["l"]; m.Port != 9000 || m.PacketSize != 64 {
					t.Errorf("l = %+v", m)
				}
			},
		},
		{
			name:  "explicit stamp values under llama defaults",
			input: "modules:\n  l:\n    prober: llama\n    port: 862\n",
			check: func(t *testing.T, c *Config) {
				if m := c.Modules["l"]; m.Port != 862 || m.PacketSize != 1028 {
					t.Errorf("l = %+v", m)
				}
			},
		},
		{
			name: "merge keys",
			input: `modules:
  a: &a
    prober: llama
    flows: 2
    allowed_targets: &nets [10.0.0.0/8]
  b:
    flows: 3
    <<: *a
  c:
    <<: [{dscp: 10, flows: 5}, *a]
    allowed_targets: *nets
  d: *a
`,
			check: func(t *testing.T, c *Config) {
				a, b, cc, d := c.Modules["a"], c.Modules["b"], c.Modules["c"], c.Modules["d"]
				if a.Prober != "llama" || a.Flows != 2 || a.Port != 8100 {
					t.Errorf("a = %+v", a)
				}
				if b.Prober != "llama" || b.Flows != 3 || b.Port != 8100 || len(b.AllowedPrefixes) != 1 {
					t.Errorf("b = %+v", b)
				}
				if cc.Prober != "llama" || cc.Flows != 5 || cc.DSCP != 10 || len(cc.AllowedPrefixes) != 1 {
					t.Errorf("c = %+v", cc)
				}
				if !d.Equal(a) {
					t.Errorf("d = %+v, want %+v", d, a)
				}
			},
		},
		{
			name:  "allowed targets: plain addresses and host bits",
			input: "modules:\n  m:\n    allowed_targets: [10.1.2.3/8, 2001:db8::1, 192.0.2.1, '::ffff:10.0.0.0/104']\n",
			check: func(t *testing.T, c *Config) {
				want := []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"),
					netip.MustParsePrefix("2001:db8::1/128"),
					netip.MustParsePrefix("192.0.2.1/32"),
					netip.MustParsePrefix("::ffff:10.0.0.0/104"),
				}
				if got := c.Modules["m"].AllowedPrefixes; !slices.Equal(got, want) {
					t.Errorf("AllowedPrefixes = %v, want %v", got, want)
				}
			},
		},
		{
			name:  "source port range exactly flows long, with zone in source address",
			input: "modules:\n  m:\n    flows: 2\n    source_port_range: 65534-65535\n    source_ip_address: fe80::1%eth0\n",
			check: func(t *testing.T, c *Config) {
				m := c.Modules["m"]
				if m.SourcePorts != [2]uint16{65534, 65535} || m.SourceIP != netip.MustParseAddr("fe80::1%eth0") {
					t.Errorf("m = %+v", m)
				}
			},
		},
		{
			name:  "integer buckets and limits",
			input: "modules:\n  m:\n    rtt_buckets: [1, 2, 2.5]\n    flows: 1024\n    dscp: 63\n    packet_size: 65507\n    port: 65535\n    window: 100ms\n    idle_timeout: 1s\n",
			check: func(t *testing.T, c *Config) {
				if got := c.Modules["m"].Buckets(); !slices.Equal(got, []float64{1, 2, 2.5}) {
					t.Errorf("Buckets() = %v", got)
				}
			},
		},
		{
			name:  "document marker and comments",
			input: "# comment\n---\nmodules: # more\n  m: {}\n...\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.input)
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// badCases are invalid configurations with their exact error.
var badCases = []struct {
	name, input, want string
}{
	{"empty file", "", "modules: at least one module must be defined"},
	{"comments only", "# nothing\n", "modules: at least one module must be defined"},
	{"null document", "---\n~\n", "modules: at least one module must be defined"},
	{"no modules key", "{}\n", "line 1: modules: at least one module must be defined"},
	{"null modules", "modules:\n", "line 1: modules: at least one module must be defined"},
	{"empty modules", "modules: {}\n", "line 1: modules: at least one module must be defined"},
	{"modules not a mapping", "modules: [a, b]\n", "line 1: modules: must be a mapping of module names to modules, got a sequence"},
	{"top level not a mapping", "- modules\n", "line 1: configuration must be a mapping, got a sequence"},
	{"unknown top-level field", "modules:\n  m: {}\nmodule: {}\n", "line 3: field module not found in type config.Config"},
	{"duplicate top-level key", "modules:\n  m: {}\nmodules:\n  n: {}\n", `line 3: mapping key "modules" already defined at line 1`},
	{"two documents", "modules:\n  m: {}\n---\nmodules:\n  n: {}\n", "line 3: only one YAML document is allowed"},
	{"syntax error", "modules:\n  m: {\n", "line 2: did not find expected node content"},
	{"tab indentation", "modules:\n\tm: {}\n", "line 2: found character that cannot start any token"},
	{"empty module name", "modules:\n  \"\": {}\n", "line 2: modules: module name must not be empty"},
	{"null module name", "modules:\n  ~: {}\n", "line 2: modules: module name must not be empty"},
	{"duplicate module", "modules:\n  a: {}\n  b: {}\n  a: {}\n", `line 4: modules: mapping key "a" already defined at line 2`},
	{"module not a mapping", "modules:\n  a: stamp\n", `line 2: modules.a: module must be a mapping, got "stamp"`},
	{"non-scalar key", "modules:\n  ? [a]\n  : {}\n", "line 2: modules: mapping key must be a scalar, got a sequence"},
	{"unknown field", "modules:\n  default:\n    colour: red\n", "line 3: modules.default: field colour not found in type config.Module"},
	{"duplicate field", "modules:\n  default:\n    flows: 4\n    flows: 5\n", `line 4: modules.default: mapping key "flows" already defined at line 3`},
	{"unknown prober", "modules:\n  default:\n    prober: twamp\n", `line 3: modules.default.prober: must be "icmp", "llama", "stamp" or "tcp", got "twamp"`},
	{"prober not a string", "modules:\n  default:\n    prober: [stamp]\n", "line 3: modules.default.prober: must be a string, got a sequence"},
	{"invalid duration", "modules:\n  default:\n    prober: stamp\n    flows: 8\n    interval: 1x\n", `line 5: modules.default.interval: invalid duration "1x"`},
	{"duration without unit", "modules:\n  default:\n    timeout: 5\n", `line 3: modules.default.timeout: invalid duration "5"`},
	{"duration mapping", "modules:\n  default:\n    timeout: {s: 5}\n", `line 3: modules.default.timeout: must be a duration such as "100ms", got a mapping`},
	{"zero interval", "modules:\n  default:\n    interval: 0s\n", "line 3: modules.default.interval: must be positive, got 0s"},
	{"negative timeout", "modules:\n  default:\n    timeout: -1s\n", "line 3: modules.default.timeout: must be positive, got -1s"},
	{"window below interval", "modules:\n  default:\n    interval: 2s\n    window: 1500ms\n", "line 4: modules.default.window: must be at least interval (2s), got 1.5s"},
	{"default window below interval", "modules:\n  default:\n    interval: 1m\n", "line 2: modules.default.window: must be at least interval (1m), got 30s"},
	{"zero flows", "modules:\n  default:\n    prober: stamp\n    interval: 100ms\n    timeout: 1s\n    window: 30s\n    flows: 0\n", "line 7: modules.default.flows: must be at least 1, got 0"},
	{"too many flows", "modules:\n  default:\n    flows: 1025\n", "line 3: modules.default.flows: must be at most 1024, got 1025"},
	{"flows as string", "modules:\n  default:\n    flows: \"8\"\n", `line 3: modules.default.flows: must be an integer, got "8"`},
	{"flows as float", "modules:\n  default:\n    flows: 8.5\n", `line 3: modules.default.flows: must be an integer, got "8.5"`},
	{"flows overflow", "modules:\n  default:\n    flows: 99999999999999999999\n", `line 3: modules.default.flows: must be an integer, got "99999999999999999999"`},
	{"port range syntax", "modules:\n  default:\n    source_port_range: \"40000\"\n", `line 3: modules.default.source_port_range: invalid port range "40000": want "first-last" with ports 1..65535`},
	{"port range zero", "modules:\n  default:\n    source_port_range: 0-7\n", `line 3: modules.default.source_port_range: invalid port range "0-7": want "first-last" with ports 1..65535`},
	{"port range too high", "modules:\n  default:\n    source_port_range: 65530-65536\n", `line 3: modules.default.source_port_range: invalid port range "65530-65536": want "first-last" with ports 1..65535`},
	{"port range reversed", "modules:\n  default:\n    source_port_range: 40007-40000\n", `line 3: modules.default.source_port_range: invalid port range "40007-40000": first port greater than last`},
	{"port range too small", "modules:\n  default:\n    source_port_range: 40000-40003\n", `line 3: modules.default.source_port_range: port range "40000-40003" has 4 ports, fewer than flows (8)`},
	{"flow_metrics not bool", "modules:\n  default:\n    flow_metrics: yes\n", `line 3: modules.default.flow_metrics: must be true or false, got "yes"`},
	{"dscp too high", "modules:\n  default:\n    prober: stamp\n    interval: 100ms\n    timeout: 1s\n    window: 30s\n    flows: 8\n    flow_metrics: false\n    dscp: 64\n", "line 9: modules.default.dscp: must be 0..63, got 64"},
	{"dscp negative", "modules:\n  default:\n    dscp: -1\n", "line 3: modules.default.dscp: must be 0..63, got -1"},
	{"stamp packet too small", "modules:\n  default:\n    packet_size: 43\n", "line 3: modules.default.packet_size: must be 44..65507 for prober stamp, got 43"},
	{"llama packet too small", "modules:\n  l:\n    prober: llama\n    packet_size: 63\n", "line 4: modules.l.packet_size: must be 64..65507 for prober llama, got 63"},
	{"packet too large", "modules:\n  default:\n    packet_size: 65508\n", "line 3: modules.default.packet_size: must be 44..65507 for prober stamp, got 65508"},
	{"port zero", "modules:\n  default:\n    port: 0\n", "line 3: modules.default.port: must be 1..65535, got 0"},
	{"port too high", "modules:\n  default:\n    port: 65536\n", "line 3: modules.default.port: must be 1..65535, got 65536"},
	{"ip protocol", "modules:\n  default:\n    ip_protocol: ipv4\n", `line 3: modules.default.ip_protocol: must be "ip4" or "ip6", got "ipv4"`},
	{"fallback not bool", "modules:\n  default:\n    ip_protocol_fallback: 1\n", `line 3: modules.default.ip_protocol_fallback: must be true or false, got "1"`},
	{"source ip", "modules:\n  default:\n    source_ip_address: 10.0.0.256\n", `line 3: modules.default.source_ip_address: invalid IP address "10.0.0.256"`},
	{"zero idle timeout", "modules:\n  default:\n    idle_timeout: 0s\n", "line 3: modules.default.idle_timeout: must be positive, got 0s"},
	{"idle timeout below timeout", "modules:\n  default:\n    timeout: 10s\n    idle_timeout: 5s\n", "line 4: modules.default.idle_timeout: must be at least timeout (10s), got 5s"},
	{"default idle timeout below timeout", "modules:\n  x:\n    timeout: 10m\n", "line 2: modules.x.idle_timeout: must be at least timeout (10m), got 5m"},
	{"buckets not increasing", "modules:\n  default:\n    rtt_buckets:\n      - 0.001\n      - 0.01\n      - 0.01\n", "line 6: modules.default.rtt_buckets[2]: must be greater than the previous bucket (0.01), got 0.01"},
	{"bucket zero", "modules:\n  default:\n    rtt_buckets: [0, 1]\n", "line 3: modules.default.rtt_buckets[0]: must be positive, got 0"},
	{"bucket infinite", "modules:\n  default:\n    rtt_buckets: [1, .inf]\n", "line 3: modules.default.rtt_buckets[1]: must be a finite number, got +Inf"},
	{"bucket not a number", "modules:\n  default:\n    rtt_buckets:\n    - 1\n    - 1ms\n", `line 5: modules.default.rtt_buckets[1]: must be a number, got "1ms"`},
	{"bucket null", "modules:\n  default:\n    rtt_buckets: [1, ~]\n", "line 3: modules.default.rtt_buckets[1]: must be a number, got null"},
	{"buckets not a list", "modules:\n  default:\n    rtt_buckets: 0.1\n", `line 3: modules.default.rtt_buckets: must be a sequence, got "0.1"`},
	{"invalid CIDR", "modules:\n  x:\n    flows: 1\n    allowed_targets: [10.0.0.0/8, 10.0.0.0/33]\n", `line 4: modules.x.allowed_targets[1]: invalid CIDR "10.0.0.0/33"`},
	{"invalid target address", "modules:\n  x:\n    allowed_targets:\n      - example.com\n", `line 4: modules.x.allowed_targets[0]: invalid IP address "example.com"`},
	{"target with zone", "modules:\n  x:\n    allowed_targets: [\"fe80::1%eth0\"]\n", `line 3: modules.x.allowed_targets[0]: invalid IP address "fe80::1%eth0"`},
	{"null target", "modules:\n  x:\n    allowed_targets: [~]\n", "line 3: modules.x.allowed_targets[0]: must be a string, got null"},
	{"target list of lists", "modules:\n  x:\n    allowed_targets: [[10.0.0.0/8]]\n", "line 3: modules.x.allowed_targets[0]: must be a string, got a sequence"},
	{"merge of a scalar", "modules:\n  x:\n    <<: 5\n", `line 3: modules.x: merge key value must be a mapping or a sequence of mappings, got "5"`},
	{"merged unknown field", "modules:\n  x:\n    <<: {colour: red}\n", "line 3: modules.x: field colour not found in type config.Module"},
	{"error in merged module", "modules:\n  a: &a\n    flows: 2\n  b:\n    <<: *a\n    source_port_range: 1-1\n", `line 6: modules.b.source_port_range: port range "1-1" has 1 ports, fewer than flows (2)`},
	{"error in aliased module", "modules:\n  a: &a\n    prober: x\n  b: *a\n", `line 3: modules.a.prober: must be "icmp", "llama", "stamp" or "tcp", got "x"`},
}

func TestParseBad(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.input))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v\ninput:\n%s", c, tc.input)
			}
			if c != nil {
				t.Errorf("Parse returned a config along with error %v", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s\ninput:\n%s", err, tc.want, tc.input)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

// TestAliasBombs checks that inputs which expand to huge documents through
// aliases or merge keys are rejected, and quickly.
func TestAliasBombs(t *testing.T) {
	var merge strings.Builder
	merge.WriteString("modules:\n  m0: &l0 {flows: 1}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&merge, "  m%d: &l%d {<<: [%s]}\n", i, i, strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 9)+fmt.Sprintf("*l%d", i-1))
	}
	var seq strings.Builder
	seq.WriteString("modules:\n  a: &a {rtt_buckets: [1")
	for j := 2; j <= 1000; j++ {
		fmt.Fprintf(&seq, ",%d", j)
	}
	seq.WriteString("]}\n")
	for i := range 2000 {
		fmt.Fprintf(&seq, "  b%d: *a\n", i)
	}
	for name, input := range map[string]string{"merge": merge.String(), "sequence": seq.String()} {
		start := time.Now()
		_, err := Parse([]byte(input))
		if err == nil || !strings.HasSuffix(err.Error(), ": document too large after expanding aliases") {
			t.Errorf("%s bomb: error = %v", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s bomb: took %v", name, d)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	name := filepath.Join("testdata", "bad.yml")
	_, err := Load(name)
	want := name + ": line 3: modules.default.flows: must be at least 1, got 0"
	if err == nil || err.Error() != want {
		t.Errorf("Load(bad) error = %v, want %s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 3 || ce.Path != "modules.default.flows" {
		t.Errorf("Load(bad) error %#v is not the expected *Error", ce)
	}
	if _, err := Load(filepath.Join("testdata", "missing.yml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestValidate(t *testing.T) {
	m := DefaultModule()
	m.AllowedTargets = []string{"10.0.0.0/8", "bogus"}
	err := m.Validate()
	if err == nil || err.Error() != `allowed_targets[1]: invalid IP address "bogus"` {
		t.Errorf("Validate() = %v", err)
	}
	m.AllowedTargets = []string{"10.0.0.0/8"}
	m.SourcePortRange = "1000-1099"
	m.SourceIPAddress = "::1"
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if len(m.AllowedPrefixes) != 1 || m.SourcePorts != [2]uint16{1000, 1099} || m.SourceIP != netip.IPv6Loopback() {
		t.Errorf("parsed fields not filled: %+v", m)
	}
	m.Flows = 0
	if err := m.Validate(); err == nil || err.Error() != "flows: must be at least 1, got 0" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestUnmarshalYAML(t *testing.T) {
	var m Module
	if err := yaml.Unmarshal([]byte("prober: llama\nflows: 2\n"), &m); err != nil {
		t.Fatal(err)
	}
	if m.Prober != "llama" || m.Flows != 2 || m.Port != 8100 || m.Interval != 100*time.Millisecond {
		t.Errorf("module = %+v", m)
	}
	err := yaml.Unmarshal([]byte("prober: llama\ncolor: red\n"), &m)
	if err == nil || err.Error() != "line 2: field color not found in type config.Module" {
		t.Errorf("error = %v", err)
	}

	var wrapper struct {
		Exporter Config `yaml:"exporter"`
	}
	err = yaml.Unmarshal([]byte("exporter:\n  modules:\n    a:\n      dscp: 99\n"), &wrapper)
	if err == nil || err.Error() != "line 4: modules.a.dscp: must be 0..63, got 99" {
		t.Errorf("error = %v", err)
	}
	if err := yaml.Unmarshal([]byte("exporter:\n  modules:\n    a: {dscp: 9}\n"), &wrapper); err != nil {
		t.Fatal(err)
	}
	if wrapper.Exporter.Modules["a"].DSCP != 9 {
		t.Errorf("config = %+v", wrapper.Exporter)
	}
}

func TestAllowed(t *testing.T) {
	c := mustParse(t, `modules:
  any: {}
  some:
    allowed_targets: [10.0.0.0/8, 2001:db8::/32, 192.0.2.1]
`)
	anyM, some := c.Modules["any"], c.Modules["some"]
	for _, tc := range []struct {
		addr      string
		any, some bool
	}{
		{"10.1.2.3", true, true},
		{"11.0.0.1", true, false},
		{"::ffff:10.1.2.3", true, true},
		{"::ffff:11.0.0.1", true, false},
		{"2001:db8::5", true, true},
		{"2001:db8::5%eth0", true, true},
		{"2001:db9::5", true, false},
		{"192.0.2.1", true, true},
		{"192.0.2.2", true, false},
		{"::1", true, false},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := anyM.Allowed(a); got != tc.any {
			t.Errorf("any.Allowed(%s) = %v, want %v", a, got, tc.any)
		}
		if got := some.Allowed(a); got != tc.some {
			t.Errorf("some.Allowed(%s) = %v, want %v", a, got, tc.some)
		}
	}
	if !anyM.Allowed(netip.Addr{}) || some.Allowed(netip.Addr{}) {
		t.Error("Allowed(invalid address) wrong")
	}
}

func TestEqual(t *testing.T) {
	base := DefaultModule()
	if !base.Equal(&base) {
		t.Error("module not equal to itself")
	}
	var nilM *Module
	if !nilM.Equal(nil) || nilM.Equal(&base) || base.Equal(nil) {
		t.Error("nil handling wrong")
	}
	same := []func(m *Module){
		func(m *Module) { m.RTTBuckets = slices.Clone(DefaultRTTBuckets) },
		func(m *Module) { m.AllowedTargets = []string{"10.0.0.1"} },
		func(m *Module) { m.SourcePortRange = " 1000 - 1007 " },
	}
	other := []func(m *Module){
		func(m *Module) {},
		func(m *Module) { m.AllowedTargets = []string{"10.0.0.1/32"} },
		func(m *Module) { m.SourcePortRange = "1000-1007" },
	}
	for i := range same {
		a, b := DefaultModule(), DefaultModule()
		same[i](&a)
		other[i](&b)
		if !a.Equal(&b) || !b.Equal(&a) {
			t.Errorf("case %d: %+v and %+v should be equal", i, a, b)
		}
	}
	a, b := DefaultModule(), DefaultModule()
	a.AllowedTargets = []string{"192.0.2.0/24", "10.0.0.0/8", "10.1.0.0/8"}
	b.AllowedTargets = []string{"10.0.0.0/8", "192.0.2.7/24"}
	if !a.Equal(&b) {
		t.Error("allowed targets in another order should be equal")
	}

	changes := map[string]func(m *Module){
		"prober":               func(m *Module) { m.Prober = "llama" },
		"interval":             func(m *Module) { m.Interval++ },
		"timeout":              func(m *Module) { m.Timeout++ },
		"window":               func(m *Module) { m.Window++ },
		"flows":                func(m *Module) { m.Flows++ },
		"source_port_range":    func(m *Module) { m.SourcePortRange = "1000-1007" },
		"flow_metrics":         func(m *Module) { m.FlowMetrics = true },
		"dscp":                 func(m *Module) { m.DSCP++ },
		"packet_size":          func(m *Module) { m.PacketSize++ },
		"port":                 func(m *Module) { m.Port++ },
		"ip_protocol":          func(m *Module) { m.IPProtocol = "ip4" },
		"ip_protocol_fallback": func(m *Module) { m.IPProtocolFallback = false },
		"source_ip_address":    func(m *Module) { m.SourceIPAddress = "::1" },
		"idle_timeout":         func(m *Module) { m.IdleTimeout++ },
		"rtt_buckets":          func(m *Module) { m.RTTBuckets = []float64{1} },
		"allowed_targets":      func(m *Module) { m.AllowedTargets = []string{"10.0.0.0/8"} },
		"invalid target":       func(m *Module) { m.AllowedTargets = []string{"bogus"} },
		"invalid source ip":    func(m *Module) { m.SourceIPAddress = "bogus" },
		"invalid port range":   func(m *Module) { m.SourcePortRange = "bogus" },
		"auth_key_file":        func(m *Module) { m.AuthKeyFile = "stamp.key" },
		"auth key":             func(m *Module) { m.AuthKey = []byte("key") },
	}
	for name, change := range changes {
		m := DefaultModule()
		change(&m)
		if m.Equal(&base) || base.Equal(&m) {
			t.Errorf("%s: changed module equal to default", name)
		}
	}
}

// TestEveryField walks the yaml fields of Module: each must be decoded from
// the file, noticed by Equal, kept by YAML and named by the error for a
// value of the wrong type. A field added to Module fails
// here until it has a sample value, so that none is forgotten.
func TestEveryField(t *testing.T) {
	key := filepath.Join(t.TempDir(), "stamp.key")
	writeFile(t, key, "secret")
	samples := map[string]string{
		"prober": "llama", "interval": "2s", "timeout": "2s", "window": "1m",
		"flows": "2", "source_port_range": "1000-1007", "flow_metrics": "true",
		"dscp": "46", "packet_size": "200", "port": "4862", "ip_protocol": "ip4",
		"ip_protocol_fallback": "false", "source_ip_address": "::1",
		"idle_timeout": "1h", "rtt_buckets": "[1, 2]",
		"allowed_targets": "[10.0.0.0/8]", "auth_key_file": key,
		"path_trace": "{interval: 2s, max_hops: 3, on_loss: false}",
	}
	// The merged packet_size leaves room for authenticated mode, and a
	// sample of packet_size overrides it.
	const base = "modules:\n  m:\n    <<: {packet_size: 112}\n"
	def := mustParse(t, base).Modules["m"]
	for f := range reflect.TypeFor[Module]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			sample, ok := samples[name]
			if !ok {
				t.Fatalf("no sample value for field %s in this test", name)
			}
			m := mustParse(t, base+"    "+name+": "+sample+"\n").Modules["m"]
			got := reflect.ValueOf(m).Elem().FieldByIndex(f.Index)
			if reflect.DeepEqual(got.Interface(), reflect.ValueOf(def).Elem().FieldByIndex(f.Index).Interface()) {
				t.Errorf("%s: %s left %s at its default %v", name, sample, f.Name, got)
			}
			changed := *def // only this field differs
			reflect.ValueOf(&changed).Elem().FieldByIndex(f.Index).Set(got)
			if changed.Equal(def) || def.Equal(&changed) {
				t.Errorf("Equal misses a change of %s", name)
			}
			out, err := (&Config{Modules: map[string]*Module{"m": m}}).YAML()
			if err != nil {
				t.Fatal(err)
			}
			if back := mustParse(t, string(out)).Modules["m"]; !back.Equal(m) {
				t.Errorf("YAML() loses %s:\n%s", name, out)
			}
			wrong := "{x: 1}" // a mapping, where a scalar or a list belongs
			if f.Type.Kind() == reflect.Pointer {
				wrong = "true" // a scalar, where a mapping belongs
			}
			want := "line 4: modules.m." + name + ": must be "
			if _, err := Parse([]byte(base + "    " + name + ": " + wrong + "\n")); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%s as %s: error %v, want %s...", wrong, name, err, want)
			}
		})
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	for _, name := range []string{"good.yml", "full.yml"} {
		t.Run(name, func(t *testing.T) {
			c := mustLoad(t, name)
			out, err := c.YAML()
			if err != nil {
				t.Fatal(err)
			}
			c2, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(YAML()): %v\n%s", err, out)
			}
			assertConfigsEqual(t, c, c2)
		})
	}
}

func TestYAMLOutput(t *testing.T) {
	out, err := Default().YAML()
	if err != nil {
		t.Fatal(err)
	}
	want := `modules:
    default:
        prober: stamp
        interval: 100ms
        timeout: 1s
        window: 30s
        flows: 8
        source_port_range: ""
        flow_metrics: false
        dscp: 0
        packet_size: 44
        port: 862
        ip_protocol: ip6
        ip_protocol_fallback: true
        source_ip_address: ""
        idle_timeout: 5m
        rtt_buckets: []
        allowed_targets: []
`
	if string(out) != want {
		t.Errorf("YAML() =\n%s\nwant\n%s", out, want)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                  "0s",
		100 * time.Millisecond:             "100ms",
		5 * time.Minute:                    "5m",
		time.Hour:                          "1h",
		time.Hour + 30*time.Second:         "1h0m30s",
		90 * time.Second:                   "1m30s",
		25*time.Hour + 10*time.Minute:      "25h10m",
		-time.Minute:                       "-1m",
		time.Duration(1<<63 - 1):           "2562047h47m16.854775807s",
		time.Minute + 500*time.Millisecond: "1m0.5s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%d) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v", formatDuration(d), back, err)
		}
	}
}

func assertConfigsEqual(t *testing.T, a, b *Config) {
	t.Helper()
	if len(a.Modules) != len(b.Modules) {
		t.Fatalf("module count %d != %d", len(a.Modules), len(b.Modules))
	}
	for name, m := range a.Modules {
		if !m.Equal(b.Modules[name]) {
			t.Errorf("module %q: %+v != %+v", name, m, b.Modules[name])
		}
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSafeConfigReload(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	sc := NewSafeConfig(reg)
	if c := sc.Get(); c == nil || len(c.Modules) != 1 || c.Modules["default"] == nil {
		t.Fatalf("initial Get() = %+v, want Default()", c)
	}
	if got := testutil.ToFloat64(sc.lastReloadSuccessful); got != 0 {
		t.Errorf("successful gauge before reload = %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 2 {
		t.Errorf("GatherAndCount = %d, %v; want 2 series", n, err)
	}

	file := filepath.Join(t.TempDir(), "llama.yml")
	writeFile(t, file, "modules:\n  fast:\n    interval: 10ms\n")
	before := time.Now()
	if err := sc.Reload(file); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	good := sc.Get()
	if good.Modules["fast"] == nil || good.Modules["fast"].Interval != 10*time.Millisecond {
		t.Fatalf("Get() after reload = %+v", good)
	}
	if got := testutil.ToFloat64(sc.lastReloadSuccessful); got != 1 {
		t.Errorf("successful gauge = %v, want 1", got)
	}
	ts := testutil.ToFloat64(sc.lastReloadSuccessTime)
	if ts < float64(before.Unix()) || ts > float64(time.Now().Unix()+1) {
		t.Errorf("timestamp gauge = %v, want about %d", ts, before.Unix())
	}

	writeFile(t, file, "modules:\n  fast:\n    interval: 10ms\n    window: 1ms\n")
	err := sc.Reload(file)
	want := file + ": line 4: modules.fast.window: must be at least interval (10ms), got 1ms"
	if err == nil || err.Error() != want {
		t.Errorf("Reload(bad) = %v, want %s", err, want)
	}
	if sc.Get() != good {
		t.Error("bad reload replaced the config")
	}
	if got := testutil.ToFloat64(sc.lastReloadSuccessful); got != 0 {
		t.Errorf("successful gauge after bad reload = %v, want 0", got)
	}
	if got := testutil.ToFloat64(sc.lastReloadSuccessTime); got != ts {
		t.Errorf("timestamp gauge after bad reload = %v, want unchanged %v", got, ts)
	}

	if err := sc.Reload(filepath.Join(t.TempDir(), "missing.yml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reload(missing) = %v", err)
	}
	if sc.Get() != good {
		t.Error("failed reload replaced the config")
	}

	if err := sc.Reload(""); err != nil {
		t.Fatalf("Reload(\"\"): %v", err)
	}
	assertConfigsEqual(t, sc.Get(), Default())
	if got := testutil.ToFloat64(sc.lastReloadSuccessful); got != 1 {
		t.Errorf("successful gauge = %v, want 1", got)
	}

	expected := `
# HELP llama_exporter_config_last_reload_successful Whether the last configuration reload attempt was successful (1) or not (0).
# TYPE llama_exporter_config_last_reload_successful gauge
llama_exporter_config_last_reload_successful 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "llama_exporter_config_last_reload_successful"); err != nil {
		t.Error(err)
	}
}

func TestSafeConfigConcurrent(t *testing.T) {
	sc := NewSafeConfig(nil)
	file := filepath.Join(t.TempDir(), "llama.yml")
	writeFile(t, file, "modules:\n  m: {}\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			if err := sc.Reload(file); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 200 {
		if c := sc.Get(); c == nil || len(c.Modules) != 1 {
			t.Fatalf("Get() = %+v", c)
		}
	}
	<-done
}

func FuzzParse(f *testing.F) {
	for _, tc := range badCases {
		f.Add([]byte(tc.input))
	}
	for _, name := range []string{"good.yml", "full.yml", "bad.yml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("modules:\n  a: &a\n    flows: 2\n  b:\n    <<: [*a, {dscp: 3}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatalf("config and error %v returned together", err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			return
		}
		if len(c.Modules) == 0 {
			t.Fatal("config without modules accepted")
		}
		for name, m := range c.Modules {
			if name == "" || m == nil {
				t.Fatalf("bad module %q: %v", name, m)
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("module %q fails Validate after Parse: %v", name, err)
			}
		}
		out, err := c.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(YAML()): %v\n%s", err, out)
		}
		assertConfigsEqual(t, c, c2)
	})
}

func TestAuthKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := dir + "/stamp.key"
	if err := os.WriteFile(key, []byte("  s3cret-shared-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte("modules:\n  auth:\n    packet_size: 112\n    auth_key_file: " + key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.Modules["auth"].AuthKey); got != "s3cret-shared-key" {
		t.Fatalf("key %q", got)
	}
	y, err := c.YAML()
	if err != nil || strings.Contains(string(y), "s3cret") || !strings.Contains(string(y), "auth_key_file: "+key) {
		t.Fatalf("YAML shows the key or hides the file name (err %v):\n%s", err, y)
	}
	for _, tc := range []struct{ input, want string }{
		{"modules:\n  a:\n    packet_size: 112\n    auth_key_file: " + dir + "/missing\n",
			"line 4: modules.a.auth_key_file: open " + dir + "/missing: no such file or directory"},
		{"modules:\n  a:\n    auth_key_file: " + key + "\n",
			"line 2: modules.a.packet_size: must be at least 112 in authenticated mode (auth_key_file), got 44"},
	} {
		if _, err := Parse([]byte(tc.input)); err == nil || err.Error() != tc.want {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
