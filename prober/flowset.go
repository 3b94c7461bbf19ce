package prober

import (
	"fmt"
	"net/netip"
)

// flowSet is what Prober.Open returns: the flows of one address family of
// a module whose protocol sends no datagrams on flow sockets, held until
// the pool closes.
type flowSet interface {
	// port returns the source port of flow i.
	port(i int) uint16
	// close releases the flows and ends what is in flight on them.
	close()
}

// openFlowSetLocked opens the flows of family fam with the protocol's
// Open, once; p.mu is held.
func (p *pool) openFlowSetLocked(fam int, src netip.Addr) error {
	if p.flowSets[fam] != nil {
		return nil
	}
	fs, err := p.proto.Open(p, fam, src)
	if err != nil {
		return fmt.Errorf("module %s: %w", p.module, err)
	}
	p.flowSets[fam] = fs
	p.watchLocked(fam)
	return nil
}

// flowSet returns the flows of family fam opened by the protocol's Open,
// or nil.
func (p *pool) flowSet(fam int) flowSet {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.flowSets[fam]
}

// closeFlowSets closes what Open returned. The pool is closed, so no
// flow set is opened any more.
func (p *pool) closeFlowSets() {
	for _, fs := range p.flowSets {
		if fs != nil {
			fs.close()
		}
	}
}

// sendFailed counts a probe that could not be sent; it stays lost.
func (ps *poolStats) sendFailed() {
	if ps != nil && ps.sendError != nil {
		ps.sendError()
	}
}
