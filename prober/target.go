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
// [ipv6]:port, [ipv6] or a bare IPv6 address into host and port, using defaultPort
// when the target has none (0 when the module has none either: the caller
// decides whether that will do). It returns an error, suitable for a 400
// answer, for an empty host, a malformed string, a host name longer than
// 253 characters or a port outside 1..65535.
func ParseTarget(target string, defaultPort int) (host string, port uint16, err error) {
	if target == "" {
		return "", 0, errors.New("target parameter is missing")
	}
	if strings.ContainsAny(target, "/ \t?#@") {
		return "", 0, fmt.Errorf("target %q is not host[:port]", quoted(target))
	}
	if a, err := netip.ParseAddr(target); err == nil {
		if !validHost(target) {
			return "", 0, fmt.Errorf("target %q is not host[:port]", quoted(target))
		}
		return a.String(), uint16(defaultPort), nil // bare IP, IPv6 included
	}
	if inner, ok := bracketed(target); ok {
		// [ipv6] without a port, as Prometheus target lists allow.
		a, err := netip.ParseAddr(inner)
		if err != nil || !a.Is6() || !validHost(inner) {
			return "", 0, fmt.Errorf("target %q: only an IPv6 address goes in brackets", quoted(target))
		}
		return a.String(), uint16(defaultPort), nil
	}
	h, p, err := net.SplitHostPort(target)
	named := err == nil
	if !named {
		if strings.ContainsAny(target, ":[]") {
			return "", 0, fmt.Errorf("target %q is not host[:port]", quoted(target))
		}
		h = target
	}
	if h == "" {
		return "", 0, fmt.Errorf("target %q has no host", quoted(target))
	}
	if len(h) > maxHostName {
		return "", 0, fmt.Errorf("target %q: a host name has at most %d characters, this one %d", quoted(target), maxHostName, len(h))
	}
	if !validHost(h) {
		return "", 0, fmt.Errorf("target %q is not host[:port]", quoted(target))
	}
	if !named {
		return h, uint16(defaultPort), nil
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return "", 0, fmt.Errorf("target %q: port must be 1..65535", quoted(target))
	}
	return h, uint16(n), nil
}

// maxHostName is the longest DNS name in text form (RFC 1035 §2.3.4: 255
// octets on the wire).
const maxHostName = 253

// maxQuoted is how much of a target error messages and logs repeat.
const maxQuoted = 80

// quoted shortens s for an error message or a log line: a 3,000-character
// target is not repeated in full.
func quoted(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return fmt.Sprintf("%s... (%d characters)", strings.ToValidUTF8(s[:maxQuoted], ""), len(s))
}

// bracketed returns what is inside a target of the form [x].
func bracketed(target string) (string, bool) {
	if len(target) > 2 && target[0] == '[' && target[len(target)-1] == ']' {
		return target[1 : len(target)-1], true
	}
	return "", false
}

// checkDestination refuses addresses no session may probe, whatever the
// module and its allowed_targets: multicast and broadcast ones, which would
// reach many hosts (or none) and whose replies could not be matched to a
// destination, and the unspecified address, which names no host. The
// error is the reason given in the 400 answer.
func checkDestination(a netip.Addr) error {
	switch {
	case a.IsUnspecified():
		return fmt.Errorf("%s is the unspecified address, not a host", a)
	case a.IsMulticast():
		return fmt.Errorf("%s is a multicast address; probe a unicast address", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is the broadcast address; probe a unicast address", a)
	}
	return nil
}

// srcLabel is an address as a label value: empty when it is unknown, such
// as the source address towards a zoned link-local target that has no route.
func srcLabel(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
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
		return netip.Addr{}, fmt.Errorf("resolving %q: %w", quoted(host), err)
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
	return netip.Addr{}, fmt.Errorf("resolving %q: no %s address", quoted(host), m.IPProtocol)
}

// resolvedTarget is a scrape's target once parsed and resolved: what a
// new session probes.
type resolvedTarget struct {
	name string         // as the scrape gave it
	host string         // its host part: a name or an address literal
	port uint16         // its port, or the module's; 0 when the prober uses none
	dst  netip.AddrPort // host resolved, with port
}

// parseModuleTarget is ParseTarget with the module's port. For a protocol
// without ports (its ProberSpec's UsesPort is false) a target that names a
// port is an error, and the port is 0.
func parseModuleTarget(target string, cfg *config.Module) (host string, port uint16, err error) {
	if spec, ok := config.LookupProber(cfg.Prober); !ok || spec.UsesPort {
		return ParseTarget(target, cfg.Port)
	}
	if _, _, err := net.SplitHostPort(target); err == nil {
		return "", 0, fmt.Errorf("target %q: prober %s uses no port, name the host alone", quoted(target), cfg.Prober)
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

// Address is the session's destination for people to read: address:port,
// or the address alone for a protocol without ports (icmp).
func (s *Session) Address() string {
	dst := s.Dst()
	if dst.Port() == 0 {
		return dst.Addr().String()
	}
	return dst.String()
}
