package prober

import "github.com/llama-exporter/llama_exporter/internal/icmpsock"

// PortWatcher is told the local ports of the prober's flow sockets while
// they are open, so that it can recognise their replies; the host-drop
// collector (internal/hostdrops) is one. proto is "udp" (a UDP flow
// socket's port), "icmp" (a ping socket's echo Identifier) or "tcp" (a tcp
// flow's source port). Each WatchPort is followed by one UnwatchPort of the
// same port when the pool closes.
type PortWatcher interface {
	WatchPort(proto string, port uint16)
	UnwatchPort(proto string, port uint16)
}

type watchedPort struct {
	proto string
	port  uint16
	fam   int // 0 IPv4, 1 IPv6
}

// watchLocked tells p.ports the ports of family fam's flows, just opened.
// Raw ICMP sockets are left out: the kernel also hands their echo replies
// to the ping socket lookup, which finds none and drops them (no_socket),
// so every reply would look dropped. p.mu is held.
func (p *pool) watchLocked(fam int) {
	if p.ports == nil {
		return
	}
	for _, c := range p.conns[fam] {
		proto := "udp"
		if ic, ok := c.FlowSocket.(interface{ Kind() icmpsock.Kind }); ok {
			if ic.Kind() != icmpsock.Ping {
				continue
			}
			proto = "icmp"
		}
		p.watchOneLocked(proto, c.port, fam)
	}
	if fs := p.flowSets[fam]; fs != nil {
		for i := range p.cfg.Flows {
			if port := fs.port(i); port != 0 {
				p.watchOneLocked(p.cfg.Prober, port, fam)
			}
		}
	}
}

func (p *pool) watchOneLocked(proto string, port uint16, fam int) {
	p.ports.WatchPort(proto, port)
	p.watched = append(p.watched, watchedPort{proto, port, fam})
}

// unwatchLocked undoes watchLocked for every family; p.mu is held.
func (p *pool) unwatchLocked() {
	for _, w := range p.watched {
		p.ports.UnwatchPort(w.proto, w.port)
	}
	p.watched = nil
}
