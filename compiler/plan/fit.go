package plan

import (
	"fmt"
	"sort"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// maxGrowth bounds the what-if search for "how many nodes would fit".
const maxGrowth = 64

// noFit reports that nothing fits: the closest candidate's overflow, and the smallest
// change that would fit, tried in order of how little it changes the user's setup.
func (s *trainSetup) noFit(ds *diag.List, res result) {
	e, sp := s.env, s.space
	if res.miss == nil {
		ds.Errorf(diag.CodeNoLayout, s.at, "no parallel layout of %s stage %s divides the model on %d devices (tensor parallelism must divide the heads and stay in a node, pipeline stages the %d layers, data parallelism the batch of %d sequences)",
			s.train.Name, s.stage.Name, sp.budget, len(e.w.layers), e.w.sequences)
		return
	}
	m := res.miss
	d := ds.Errorf(diag.CodeNoFit, s.at, "%s stage %s does not fit %d × %s: the closest layout (%s) %s",
		s.train.Name, s.stage.Name, sp.budget, s.cluster.Device.Name, layoutText(m.l), overflowText(m))
	fixes := s.fixes()
	if len(fixes) > 0 {
		d.Suggestion = fixes[0]
		for _, f := range fixes[1:] {
			d.Notes = append(d.Notes, "also fits: "+f)
		}
	} else {
		d.Notes = append(d.Notes, fmt.Sprintf("nothing tried fits, up to %d× the nodes", maxGrowth))
	}
}

// fixes returns the changes that make the stage fit, least intrusive first.
func (s *trainSetup) fixes() []string {
	e, base := s.env, *s.space
	try := func(sp space) *candidate {
		sp.keep = 0
		return e.search(&sp).best
	}
	var out []string
	if len(base.recompute) < 3 {
		sp := base
		sp.recompute = []program.Recompute{program.RecomputeFull}
		if c := try(sp); c != nil {
			out = append(out, fmt.Sprintf("set recompute = full (%s)", layoutText(c.l)))
		}
	}
	for _, alt := range []struct {
		opt, text string
	}{
		{"zero3", "memory = zero(3)"},
		{"zero3-offload", "memory = zero(3, offload = cpu)"},
		{"unified_cache", "memory = unified_cache"},
	} {
		st, _ := strategies(alt.opt, s.train.Memory, false)
		if len(base.strategies) == 1 && base.strategies[0] == st[0] {
			continue
		}
		sp := base
		sp.strategies = st
		if c := try(sp); c != nil {
			out = append(out, fmt.Sprintf("%s (%s)", alt.text, layoutText(c.l)))
		}
	}
	// More nodes, with the declared strategy and with each stronger one: double until it
	// fits, then bisect. The cheapest comes first.
	gpn := max(1, s.cluster.GPUsPerNode)
	nodes := max(1, base.budget/gpn)
	type grown struct {
		nodes int
		text  string
	}
	var more []grown
	for _, alt := range []struct {
		strats []strategy
		text   string
	}{
		{base.strategies, ""},
		{[]strategy{{"zero", 3, "none"}}, "memory = zero(3)"},
		{[]strategy{{"zero", 3, "cpu"}}, "memory = zero(3, offload = cpu)"},
		{[]strategy{{"unified_cache", 3, "none"}}, "memory = unified_cache"},
	} {
		if alt.text != "" && len(base.strategies) == 1 && base.strategies[0] == alt.strats[0] {
			continue
		}
		sp := base
		sp.strategies = alt.strats
		if _, c := s.nodesToFit(sp, nodes); c != nil {
			// Say what the layout uses, which may be fewer devices than the nodes hold.
			world := c.l.World()
			n := (world + gpn - 1) / gpn
			at := fmt.Sprintf("%s (%s; %s)", plural(n, "node"), devices(world, s.cluster.Device.Name), layoutText(c.l))
			text := "plan for " + at
			if alt.text != "" {
				text = alt.text + " on " + at
			}
			more = append(more, grown{n, text})
		}
	}
	sort.SliceStable(more, func(i, j int) bool { return more[i].nodes < more[j].nodes })
	for _, m := range more {
		out = append(out, m.text)
	}
	return out
}

// nodesToFit returns the fewest nodes (more than the current count, up to maxGrowth times
// it) on which sp finds a layout, and that layout. A strategy that already fits on the
// current nodes needs no more of them: nothing is returned, the strategy is its own fix.
func (s *trainSetup) nodesToFit(sp space, nodes int) (int, *candidate) {
	gpn := max(1, s.cluster.GPUsPerNode)
	sp.keep = 0
	fitsAt := func(n int) *candidate {
		sp.budget = n * gpn
		return s.env.search(&sp).best
	}
	if sp.budget > 0 && s.env.search(&sp).best != nil {
		return 0, nil
	}
	lo, hi := nodes, 0
	for n := nodes * 2; n <= nodes*maxGrowth; n *= 2 {
		if fitsAt(n) != nil {
			hi = n
			break
		}
		lo = n
	}
	if hi == 0 {
		return 0, nil
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fitsAt(mid) != nil {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, fitsAt(hi)
}
