package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// ProberSpec is what the configuration needs to know of one probe protocol:
// its defaults and limits. The prober package registers one per protocol
// (RegisterProber) from its registry of protocols, so that validation and
// defaults follow the protocols that exist instead of naming them here.
type ProberSpec struct {
	// DefaultPort is the destination port of targets that name none, when
	// the module sets no port; 0 means there is none and targets must name
	// their port unless the module's port is set. Ignored when UsesPort is
	// false.
	DefaultPort int
	// UsesPort is false for protocols without ports (ICMP echo): then
	// port and source_port_range are not used.
	UsesPort bool
	// DefaultPacketSize is the payload size, in octets, when the module
	// sets no packet_size.
	DefaultPacketSize int
	// MinPacketSize and MaxPacketSize bound packet_size, in octets. A
	// protocol whose probes carry no payload (a TCP handshake) has both 0,
	// and then packet_size must be left unset.
	MinPacketSize, MaxPacketSize int
	// MinPacketSizeAuth is the smallest packet_size in authenticated mode
	// (auth_key_file); 0 when the protocol has no authenticated mode.
	MinPacketSizeAuth int
	// PathTrace is true when the protocol can trace each flow's path
	// (path_trace): its probes leave from flow sockets that can send them
	// with a TTL / Hop Limit of their own.
	PathTrace bool
}

var (
	probersMu sync.RWMutex
	probers   = map[string]ProberSpec{}
)

// RegisterProber makes name a valid value of a module's prober field, with
// the defaults and limits of spec. Registering a name again replaces its
// spec. The prober package registers every protocol it implements when it
// is initialised; a program that parses configuration without linking it
// knows no prober.
func RegisterProber(name string, spec ProberSpec) {
	probersMu.Lock()
	defer probersMu.Unlock()
	probers[name] = spec
}

// LookupProber returns the spec registered for name, and whether there is
// one.
func LookupProber(name string) (ProberSpec, bool) {
	probersMu.RLock()
	defer probersMu.RUnlock()
	s, ok := probers[name]
	return s, ok
}

// ProberNames returns the registered prober names, sorted.
func ProberNames() []string {
	probersMu.RLock()
	defer probersMu.RUnlock()
	return slices.Sorted(maps.Keys(probers))
}

// unknownProber is the message for a prober field naming no registered
// protocol: `must be "a", "b" or "c", got "x"`.
func unknownProber(name string) string {
	names := ProberNames()
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	list := strings.Join(quoted, ", ")
	if n := len(quoted); n > 1 {
		list = strings.Join(quoted[:n-1], ", ") + " or " + quoted[n-1]
	}
	return fmt.Sprintf("must be %s, got %q", list, name)
}

// authProbers returns the names of the probers with an authenticated mode,
// joined with " or ".
func authProbers() string {
	var out []string
	for _, n := range ProberNames() {
		if s, _ := LookupProber(n); s.MinPacketSizeAuth > 0 {
			out = append(out, n)
		}
	}
	return strings.Join(out, " or ")
}
