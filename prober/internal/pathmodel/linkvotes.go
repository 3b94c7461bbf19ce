package pathmodel

import (
	"net/netip"
	"slices"
)

// deadFloor is the fewest decided probes in the window, all lost, that make
// a flow dead: its loss counts against its path though no reply tells its
// direction.
const deadFloor = 3

// votes reports whether the flow's window loss counts against the links of
// its path: some of it is known to be on the way out, or the flow lost
// every probe (dead), whose direction no reply can tell. Loss known to be
// on the way back, or of unknown direction but partial, does not.
func (v *FlowView) votes() bool {
	return v.forward() || v.Decided >= deadFloor && v.Lost == v.Decided
}

// links calls fn with the address of each hop of the flow's path that
// answered, from the first hop to the target.
func (v *FlowView) links(fn func(to netip.Addr)) {
	for h := range v.Length() {
		if a := v.Hops[h].Addr; a.IsValid() {
			fn(a)
		}
	}
}

// LossyLinks returns the far-end addresses of the links that the session's
// voting flows cross, in ascending order, each once.
func LossyLinks(views []FlowView) []netip.Addr {
	var out []netip.Addr
	for i := range views {
		if views[i].votes() {
			views[i].links(func(to netip.Addr) { out = append(out, to) })
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// LinkKey names a link within a module.
type LinkKey struct {
	Module string
	To     netip.Addr
}

// Tally is one link's share of the fold.
type Tally struct {
	Flows, Lossy, Targets int
}

// Fold sums the paths of the traced sessions per link.
type Fold map[LinkKey]*Tally

// Add counts the flows of one session.
func (f Fold) Add(module string, views []FlowView) {
	for i := range views {
		v := &views[i]
		v.links(func(to netip.Addr) {
			t := f.tally(LinkKey{module, to})
			t.Flows++
			if v.votes() {
				t.Lossy++
			}
		})
	}
	for _, to := range LossyLinks(views) {
		f.tally(LinkKey{module, to}).Targets++
	}
}

func (f Fold) tally(k LinkKey) *Tally {
	t := f[k]
	if t == nil {
		t = &Tally{}
		f[k] = t
	}
	return t
}
