package prober

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
	flow := func(port uint16, addrs []netip.Addr, lost, decided, fwd, bwd int) flowView {
		traces := healthy
		if addrs == nil {
			traces = nil
		}
		v := synthFlow(port, lost > 0, addrs, traces)
		v.lost, v.decided, v.fwd, v.bwd, v.stateful = lost, decided, fwd, bwd, true
		return v
	}
	fold := linkFold{}
	fold.add("m", []flowView{
		flow(1, viaB, 3, 30, 3, 0),  // forward loss: votes
		flow(2, viaB, 30, 30, 0, 0), // dead: votes
		flow(3, viaA, 2, 30, 0, 2),  // replies lost: does not vote
		flow(4, viaA, 0, 30, 0, 0),  // healthy
		flow(5, nil, 30, 30, 0, 0),  // never traced: on no link
	})
	fold.add("m", []flowView{flow(1, viaB, 0, 30, 0, 0)})
	want := map[netip.Addr]linkTally{
		hopB:  {flows: 3, lossy: 2, targets: 1},
		hopC:  {flows: 3, lossy: 2, targets: 1},
		hopA:  {flows: 2},
		hopC2: {flows: 2},
		hopD:  {flows: 5, lossy: 2, targets: 1},
	}
	if len(fold) != len(want) {
		t.Errorf("fold has %d links, want %d", len(fold), len(want))
	}
	for to, w := range want {
		if got := fold[linkKey{"m", to}]; got == nil || *got != w {
			t.Errorf("link to %v: %+v, want %+v", to, got, w)
		}
	}
	if got := lossyLinks([]flowView{flow(1, viaB, 3, 30, 3, 0), flow(3, viaA, 2, 30, 0, 2)}); !slices.Equal(got, []netip.Addr{hopB, hopC, hopD}) {
		t.Errorf("lossy links %v, want %v", got, []netip.Addr{hopB, hopC, hopD})
	}
}
