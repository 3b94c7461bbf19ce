package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Roles a host can have in the mesh.
const (
	roleBoth        = "both"        // runs the exporter and the reflector (default)
	roleSource      = "source"      // runs only the exporter: probes, is not probed
	roleDestination = "destination" // runs only a reflector (or is a router): probed only
)

// Label names the generated target groups carry.
const (
	labelSource      = "source"
	labelDestination = "destination"
	srcPrefix        = "src_"
	dstPrefix        = "dst_"
	// labelExporter holds the address of the source's exporter; the scrape
	// config moves it to __address__ (the __tmp prefix is reserved by
	// Prometheus for such temporary labels and dropped after relabeling).
	labelExporter = "__tmp_llama_exporter"
	// labelModule becomes the module URL parameter of the scrape.
	labelModule = "__param_module"
)

// HostList is the input file: the hosts of the mesh.
type HostList struct {
	Hosts []Host `yaml:"hosts"`
	// Devices name the routers whose interfaces answer path traces (see
	// DeviceRules); optional.
	Devices []Device `yaml:"devices"`
}

// Host is one host of the mesh.
type Host struct {
	// Name identifies the host in the source and destination labels and
	// in per-source file names.
	Name string `yaml:"name"`
	// Address is where its reflector answers: host, host:port, [v6]:port
	// or a bare IPv6 address. It becomes the probe target.
	Address string `yaml:"address"`
	// Exporter is the host:port of its llama_exporter; by default the host
	// part of Address with --exporter.port.
	Exporter string `yaml:"exporter"`
	// Role is both (default), source or destination.
	Role string `yaml:"role"`
	// Module is the llama_exporter module used to probe this host, e.g.
	// llama_legacy for a host still running Dropbox's reflector; by default
	// --module.
	Module string `yaml:"module"`
	// Labels are copied to every pair as src_<name> when the host is the
	// source and dst_<name> when it is the destination.
	Labels map[string]string `yaml:"labels"`
	// Representative marks the hosts that probe, and are probed by, the
	// representatives of other groups when Options.GroupLabel thins the
	// mesh.
	Representative bool `yaml:"representative"`
}

// Options are the command-line settings that shape the output.
type Options struct {
	ExporterPort  int    // port of llama_exporter when a host names no exporter
	ReflectorPort int    // port appended to addresses without one; 0: none
	Module        string // module for hosts that name none; "": the exporter's default
	// GroupLabel, when set, thins the mesh: hosts with the same value of
	// this label (a rack, a cluster) form a full mesh, and between groups
	// only representatives probe each other.
	GroupLabel string
}

// TargetGroup is one entry of a file_sd file.
type TargetGroup struct {
	Targets []string          `json:"targets" yaml:"targets"`
	Labels  map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// Mesh is the generated discovery data.
type Mesh struct {
	// Pairs holds, per source host name, one group per destination.
	Pairs map[string][]TargetGroup
	// Sources lists the source names in order.
	Sources []string
	// Exporters holds one group per source: its exporter, for the job that
	// scrapes /metrics.
	Exporters []TargetGroup
}

var (
	hostNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	// reservedLabels would collide, once prefixed, with labels of
	// llama_probe_target_info (src_ip, dst_ip, dst_port).
	reservedLabels = []string{"ip", "port"}
)

// LoadHosts reads and validates a host list.
func LoadHosts(path string) (*HostList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list, err := ParseHosts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}

// ParseHosts decodes a host list strictly (unknown keys are errors) and
// validates it.
func ParseHosts(data []byte) (*HostList, error) {
	var list HostList
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&list); err != nil {
		return nil, err
	}
	if err := list.validate(); err != nil {
		return nil, err
	}
	if err := list.validateDevices(); err != nil {
		return nil, err
	}
	return &list, nil
}

func (l *HostList) validate() error {
	if len(l.Hosts) == 0 {
		return errors.New("hosts: the list is empty")
	}
	seen := map[string]bool{}
	for i := range l.Hosts {
		h := &l.Hosts[i]
		where := fmt.Sprintf("hosts[%d]", i)
		if h.Name != "" {
			where = fmt.Sprintf("hosts[%d] (%s)", i, h.Name)
		}
		if !hostNameRE.MatchString(h.Name) {
			return fmt.Errorf("%s: name %q must match %s", where, h.Name, hostNameRE)
		}
		if seen[h.Name] {
			return fmt.Errorf("%s: name %q appears twice", where, h.Name)
		}
		seen[h.Name] = true
		if _, _, err := splitAddress(h.Address); err != nil {
			return fmt.Errorf("%s: address: %w", where, err)
		}
		if h.Exporter != "" {
			if _, err := checkHostPort(h.Exporter); err != nil {
				return fmt.Errorf("%s: exporter: %w", where, err)
			}
		}
		switch h.Role {
		case "", roleBoth, roleSource, roleDestination:
		default:
			return fmt.Errorf("%s: role must be %s, %s or %s, got %q", where, roleBoth, roleSource, roleDestination, h.Role)
		}
		if h.Module != "" && strings.ContainsAny(h.Module, " \t\n&?#/") {
			return fmt.Errorf("%s: module %q is not a module name", where, h.Module)
		}
		for k := range h.Labels {
			if !labelNameRE.MatchString(k) || strings.HasPrefix(k, "__") {
				return fmt.Errorf("%s: label %q is not a valid label name (or starts with __)", where, k)
			}
			if slices.Contains(reservedLabels, k) {
				return fmt.Errorf("%s: label %q is reserved: src_%s and dst_%s are labels of llama_probe_target_info", where, k, k, k)
			}
		}
	}
	return nil
}

// splitAddress parses a reflector address as llama_exporter parses /probe
// targets and returns its host and port ("" when it has none).
func splitAddress(addr string) (host, port string, err error) {
	if addr == "" {
		return "", "", errors.New("missing")
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.String(), "", nil // bare IP, IPv6 included
	}
	if strings.ContainsAny(addr, "/ \t?#@") {
		return "", "", fmt.Errorf("%q is not host[:port]", addr)
	}
	if !strings.ContainsAny(addr, ":[]") {
		return addr, "", nil
	}
	h, err := checkHostPort(addr)
	if err != nil {
		return "", "", err
	}
	_, p, _ := net.SplitHostPort(addr)
	return h, p, nil
}

// checkHostPort checks a host:port and returns the host.
func checkHostPort(s string) (string, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if h == "" || strings.ContainsAny(h, "/ \t?#@") {
		return "", fmt.Errorf("%q has no valid host", s)
	}
	if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("%q: port must be 1..65535", s)
	}
	return h, nil
}

// target is the probe target of h: its address, with opts.ReflectorPort
// when the address has no port of its own.
func target(h *Host, opts Options) string {
	host, port, _ := splitAddress(h.Address)
	if port != "" || opts.ReflectorPort == 0 {
		return h.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(opts.ReflectorPort))
}

// exporter is where Prometheus scrapes h's llama_exporter.
func exporter(h *Host, opts Options) string {
	if h.Exporter != "" {
		return h.Exporter
	}
	host, _, _ := splitAddress(h.Address)
	return net.JoinHostPort(host, strconv.Itoa(opts.ExporterPort))
}

// CheckGroups checks a host list for Options.GroupLabel: every host must
// carry the label. It returns the groups that have no representative, and
// so are probed only from inside, when there is more than one group.
func CheckGroups(list *HostList, label string) (isolated []string, err error) {
	reps := map[string]bool{}
	for _, h := range list.Hosts {
		g, ok := h.Labels[label]
		if !ok {
			return nil, fmt.Errorf("host %s has no label %q, which --mesh.group-label names", h.Name, label)
		}
		reps[g] = reps[g] || h.Representative
	}
	if len(reps) < 2 {
		return nil, nil
	}
	for g, ok := range reps {
		if !ok {
			isolated = append(isolated, g)
		}
	}
	slices.Sort(isolated)
	return isolated, nil
}

// probes reports whether src probes dst under opts.
func probes(src, dst *Host, opts Options) bool {
	if src.Name == dst.Name || !isSource(src) || !isDestination(dst) {
		return false
	}
	if opts.GroupLabel == "" || src.Labels[opts.GroupLabel] == dst.Labels[opts.GroupLabel] {
		return true
	}
	return src.Representative && dst.Representative
}

func isSource(h *Host) bool      { return h.Role != roleDestination }
func isDestination(h *Host) bool { return h.Role != roleSource }

// Build computes the mesh: every source probes every destination but
// itself, or, with opts.GroupLabel, every destination of its group and,
// between representatives, those of the other groups.
func Build(list *HostList, opts Options) *Mesh {
	hosts := slices.Clone(list.Hosts)
	slices.SortFunc(hosts, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	m := &Mesh{Pairs: map[string][]TargetGroup{}}
	for i := range hosts {
		src := &hosts[i]
		if !isSource(src) {
			continue
		}
		m.Sources = append(m.Sources, src.Name)
		exp := map[string]string{labelSource: src.Name}
		addPrefixed(exp, srcPrefix, src.Labels)
		m.Exporters = append(m.Exporters, TargetGroup{Targets: []string{exporter(src, opts)}, Labels: exp})
		groups := []TargetGroup{}
		for j := range hosts {
			dst := &hosts[j]
			if !probes(src, dst, opts) {
				continue
			}
			labels := map[string]string{
				labelSource:      src.Name,
				labelDestination: dst.Name,
				labelExporter:    exporter(src, opts),
			}
			if mod := cmp.Or(dst.Module, opts.Module); mod != "" {
				labels[labelModule] = mod
			}
			addPrefixed(labels, srcPrefix, src.Labels)
			addPrefixed(labels, dstPrefix, dst.Labels)
			groups = append(groups, TargetGroup{Targets: []string{target(dst, opts)}, Labels: labels})
		}
		m.Pairs[src.Name] = groups
	}
	return m
}

func addPrefixed(dst map[string]string, prefix string, labels map[string]string) {
	for k, v := range labels {
		dst[prefix+k] = v
	}
}

// All returns every pair's group, sources in order.
func (m *Mesh) All() []TargetGroup {
	all := []TargetGroup{}
	for _, s := range m.Sources {
		all = append(all, m.Pairs[s]...)
	}
	return all
}

// Encode renders target groups as file_sd JSON or YAML.
func Encode(groups []TargetGroup, format string) ([]byte, error) {
	switch format {
	case "json":
		b, err := json.MarshalIndent(groups, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	case "yaml":
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(groups); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("unknown format %q", format)
}

// writeFile replaces path with data atomically (a temporary file in the
// same directory, then a rename), so that Prometheus, which watches file_sd
// files, never reads half a file. An unchanged file is left alone and
// reports false.
func writeFile(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}

// perSourcePrefix starts the names of the files written in --output.dir;
// only files with this prefix are ever removed from it.
const perSourcePrefix = "llama_"

// writeDir writes one file per source into dir and removes the files of
// sources that are gone. It returns the names written or removed.
func writeDir(dir, format string, m *Mesh) (changed []string, err error) {
	ext := "." + format
	if format == "yaml" {
		ext = ".yml"
	}
	keep := map[string]bool{}
	for _, s := range m.Sources {
		name := perSourcePrefix + s + ext
		keep[name] = true
		data, err := Encode(m.Pairs[s], format)
		if err != nil {
			return changed, err
		}
		wrote, err := writeFile(filepath.Join(dir, name), data)
		if err != nil {
			return changed, err
		}
		if wrote {
			changed = append(changed, name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return changed, err
	}
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, perSourcePrefix) && strings.HasSuffix(n, ext) && !keep[n] {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return changed, err
			}
			changed = append(changed, n+" (removed)")
		}
	}
	return changed, nil
}
