package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/llama-exporter/llama_exporter/config"
)

// ParseTarget splits a /probe target of the form host, host:port,
// [ipv6]:port or a bare IPv6 address into host and port, using defaultPort
// when the target has none (0 when the module has none either: the caller
// decides whether that will do). It returns an error, suitable for a 400
// answer, for an empty host, a malformed string or a port outside 1..65535.
func ParseTarget(target string, defaultPort int) (host string, port uint16, err error) {
	if target == "" {
		return "", 0, errors.New("target parameter is missing")
	}
	if strings.ContainsAny(target, "/ \t?#@") {
		return "", 0, fmt.Errorf("target %q is not host[:port]", target)
	}
	if a, err := netip.ParseAddr(target); err == nil {
		if !validHost(target) {
			return "", 0, fmt.Errorf("target %q is not host[:port]", target)
		}
		return a.String(), uint16(defaultPort), nil // bare IP, IPv6 included
	}
	h, p, err := net.SplitHostPort(target)
	named := err == nil
	if !named {
		if strings.ContainsAny(target, ":[]") {
			return "", 0, fmt.Errorf("target %q is not host[:port]", target)
		}
		h = target
	}
	if h == "" {
		return "", 0, fmt.Errorf("target %q has no host", target)
	}
	if !validHost(h) {
		return "", 0, fmt.Errorf("target %q is not host[:port]", target)
	}
	if !named {
		return h, uint16(defaultPort), nil
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return "", 0, fmt.Errorf("target %q: port must be 1..65535", target)
	}
	return h, uint16(n), nil
}

// lookupFunc resolves a host name, as net.Resolver.LookupNetIP does.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// validHost accepts an IP address (an IPv6 zone, if any, must be an
// interface name or index) or a host name of letters, digits, '.', '-' and
// '_'.
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == "" || isNameToken(a.Zone())
	}
	return isNameToken(h)
}

func isNameToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// resolve returns host's address in the module's preferred family
// (ip_protocol), falling back to the other family unless
// ip_protocol_fallback is false, as blackbox_exporter does. An IP literal
// is used as it is.
func resolve(ctx context.Context, lookup lookupFunc, host string, m *config.Module) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	addrs, err := lookup(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %q: %w", host, err)
	}
	want6 := m.IPProtocol != "ip4"
	var fallback netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() == want6 {
			return a, nil
		}
		if !fallback.IsValid() {
			fallback = a
		}
	}
	if fallback.IsValid() && m.IPProtocolFallback {
		return fallback, nil
	}
	return netip.Addr{}, fmt.Errorf("resolving %q: no %s address", host, m.IPProtocol)
}

// parseModuleTarget is ParseTarget with the module's port. For a protocol
// without ports (its ProberSpec's UsesPort is false) a target that names a
// port is an error, and the port is 0.
func parseModuleTarget(target string, cfg *config.Module) (host string, port uint16, err error) {
	if spec, ok := config.LookupProber(cfg.Prober); !ok || spec.UsesPort {
		return ParseTarget(target, cfg.Port)
	}
	if _, _, err := net.SplitHostPort(target); err == nil {
		return "", 0, fmt.Errorf("target %q: prober %s uses no port, name the host alone", target, cfg.Prober)
	}
	host, _, err = ParseTarget(target, 1)
	return host, 0, err
}

// dstPort is the dst_port label of llama_probe_target_info: empty for a
// protocol without ports.
func dstPort(cfg *config.Module, port uint16) string {
	if spec, ok := config.LookupProber(cfg.Prober); ok && !spec.UsesPort {
		return ""
	}
	return strconv.Itoa(int(port))
}
