package main

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Device is a router, or any box whose interfaces answer path traces: its
// name and its interfaces' addresses, so that the fleet rules can name a
// link "spine1:eth2 -> leaf2:eth0" instead of by the address that answered
// at its far end.
type Device struct {
	// Name is the device's name, as alerts show it.
	Name string `yaml:"name"`
	// Interfaces maps an interface name to its address with the prefix
	// length of its link, e.g. eth0: 198.18.1.1/31. On a point-to-point
	// link (/31, /30; /127, /126) the other address of the prefix is the
	// link's near end.
	Interfaces map[string]string `yaml:"interfaces"`
}

// endpoint is one named address: a device's interface, or a host.
type endpoint struct {
	addr   netip.Addr
	prefix netip.Prefix // the link's prefix; invalid for a host
	device string
	iface  string // empty for a host
}

func (e endpoint) String() string {
	if e.iface == "" {
		return e.device
	}
	return e.device + ":" + e.iface
}

// validateDevices checks the devices of the list: names unique, every
// interface address a valid address with a prefix length.
func (l *HostList) validateDevices() error {
	seen := map[string]bool{}
	for i, d := range l.Devices {
		where := fmt.Sprintf("devices[%d]", i)
		if !hostNameRE.MatchString(d.Name) {
			return fmt.Errorf("%s: name %q must match %s", where, d.Name, hostNameRE)
		}
		if seen[d.Name] {
			return fmt.Errorf("%s: name %q appears twice", where, d.Name)
		}
		seen[d.Name] = true
		for iface, a := range d.Interfaces {
			if _, err := netip.ParsePrefix(a); err != nil {
				return fmt.Errorf("%s (%s): interfaces: %s: %q is not address/prefix-length: %v", where, d.Name, iface, a, err)
			}
		}
	}
	return nil
}

// endpoints returns every named address of the list: the devices'
// interfaces, and the hosts whose address is an IP address.
func (l *HostList) endpoints() []endpoint {
	var out []endpoint
	for _, d := range l.Devices {
		for iface, a := range d.Interfaces {
			p := netip.MustParsePrefix(a) // validated
			out = append(out, endpoint{addr: p.Addr(), prefix: p.Masked(), device: d.Name, iface: iface})
		}
	}
	for _, h := range l.Hosts {
		host, _, _ := splitAddress(h.Address)
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, endpoint{addr: a.Unmap(), device: h.Name})
		}
	}
	slices.SortFunc(out, func(a, b endpoint) int { return cmp.Or(a.addr.Compare(b.addr), strings.Compare(a.device, b.device)) })
	return out
}

// nearEnd returns the endpoint at the other end of the point-to-point link
// that e's address ends: the other named address within a /31, /30, /127
// or /126 prefix of a device interface that holds e.
func nearEnd(e endpoint, all []endpoint) (endpoint, bool) {
	for _, o := range all {
		if o.addr == e.addr {
			continue
		}
		for _, p := range []netip.Prefix{e.prefix, o.prefix} {
			if p.IsValid() && p.Addr().BitLen()-p.Bits() <= 2 && p.Contains(e.addr) && p.Contains(o.addr) {
				return o, true
			}
		}
	}
	return endpoint{}, false
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

type rule struct {
	Record string            `yaml:"record"`
	Expr   string            `yaml:"expr"`
	Labels map[string]string `yaml:"labels"`
}

// DeviceRules returns a Prometheus rule file that records
// llama_device_info{address, device, interface, link, near_device} = 1 for
// every named address of the list: link is "NEAR -> FAR" for the link whose
// far end answers from address, NEAR being the other end of a
// point-to-point prefix, or just FAR where no other end is known;
// near_device is NEAR's device, empty when unknown.
func DeviceRules(list *HostList) ([]byte, error) {
	all := list.endpoints()
	g := ruleGroup{Name: "llama_devices"}
	for _, e := range all {
		link, nearDevice := e.String(), ""
		if near, ok := nearEnd(e, all); ok {
			link, nearDevice = near.String()+" -> "+link, near.device
		}
		g.Rules = append(g.Rules, rule{Record: "llama_device_info", Expr: "vector(1)", Labels: map[string]string{
			"address": e.addr.String(), "device": e.device, "interface": e.iface, "link": link, "near_device": nearDevice,
		}})
	}
	var b bytes.Buffer
	b.WriteString("# Written by llama-filesd --output.devices-rules from the hosts file: the\n# names of the hosts' and routers' addresses, for the fleet rules. Do not edit.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(ruleFile{Groups: []ruleGroup{g}}); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}
