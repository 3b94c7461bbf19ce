package pathmodel

import (
	"net/netip"
	"slices"
	"testing"
)

// The fold counts each traced flow once on every link of its path; a flow
// votes against its links for forward loss or when it loses every probe,
// never for loss known to be on the way back.
func TestLinkFold(t *testing.T) {
	healthy := repeat(2, synthTrace{ans: all3})
	flow := func(port uint16, addrs []netip.Addr, lost, decided, fwd, bwd int) FlowView {
		traces := healthy
		if addrs == nil {
			traces = nil
		}
		v := synthFlow(port, lost > 0, addrs, traces)
		v.Lost, v.Decided, v.ForwardLost, v.BackwardLost, v.Stateful = lost, decided, fwd, bwd, true
		return v
	}
	fold := Fold{}
	fold.Add("m", []FlowView{
		flow(1, viaB, 3, 30, 3, 0),  // forward loss: votes
		flow(2, viaB, 30, 30, 0, 0), // dead: votes
		flow(3, viaA, 2, 30, 0, 2),  // replies lost: does not vote
		flow(4, viaA, 0, 30, 0, 0),  // healthy
		flow(5, nil, 30, 30, 0, 0),  // never traced: on no link
	})
	fold.Add("m", []FlowView{flow(1, viaB, 0, 30, 0, 0)})
	want := map[netip.Addr]Tally{
		hopB:  {Flows: 3, Lossy: 2, Targets: 1},
		hopC:  {Flows: 3, Lossy: 2, Targets: 1},
		hopA:  {Flows: 2},
		hopC2: {Flows: 2},
		hopD:  {Flows: 5, Lossy: 2, Targets: 1},
	}
	if len(fold) != len(want) {
		t.Errorf("fold has %d links, want %d", len(fold), len(want))
	}
	for to, w := range want {
		if got := fold[LinkKey{"m", to}]; got == nil || *got != w {
			t.Errorf("link to %v: %+v, want %+v", to, got, w)
		}
	}
	if got := LossyLinks([]FlowView{flow(1, viaB, 3, 30, 3, 0), flow(3, viaA, 2, 30, 0, 2)}); !slices.Equal(got, []netip.Addr{hopB, hopC, hopD}) {
		t.Errorf("lossy links %v, want %v", got, []netip.Addr{hopB, hopC, hopD})
	}
}
