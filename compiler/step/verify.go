package step

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Verify checks one program: every buffer an op reads was written by an earlier op (or
// holds state from before the step: parameters, gradients, optimizer states, the step's
// input), no compute op writes a parameter gradient after an all-reduce or reduce-scatter
// summed it (a gradient bucket reduced before its last write), no two buffers live at the
// same op share arena bytes, and under the unified cache the device tier's arena is within
// the budget.
func Verify(p *Program) error {
	var errs []error
	written := make([]bool, len(p.Buffers))
	for i, b := range p.Buffers {
		written[i] = b.Kind.Persistent() || b.Kind == KindInput
	}
	// reducedAt is, for a parameter gradient, the last reduction that summed it (-1: none).
	reducedAt := make([]int, len(p.Buffers))
	for i := range reducedAt {
		reducedAt[i] = -1
	}
	for i, op := range p.Ops {
		for _, b := range op.In {
			if !written[b] {
				errs = append(errs, fmt.Errorf("rank %d op %d (%s %s): reads %s before any op writes it", p.Rank, i, op.Phase, op.Kind, p.Buffers[b].Name))
				written[b] = true // one report per buffer
			}
		}
		for _, b := range op.Out {
			written[b] = true
		}
		errs = append(errs, writesAfterCollective(p, i, reducedAt)...)
	}
	lt := p.Memory.Lifetime
	for tier := Device; tier <= Host; tier++ {
		var live []int
		for i, b := range p.Buffers {
			if b.Tier == tier && lt[i][0] >= 0 {
				live = append(live, i)
			}
		}
		sort.Slice(live, func(a, b int) bool { return p.Buffers[live[a]].Offset < p.Buffers[live[b]].Offset })
		for x := 0; x < len(live); x++ {
			bx := p.Buffers[live[x]]
			for y := x + 1; y < len(live) && p.Buffers[live[y]].Offset < bx.Offset+bx.Bytes(); y++ {
				i, j := live[x], live[y]
				if lt[i][0] <= lt[j][1] && lt[j][0] <= lt[i][1] {
					errs = append(errs, fmt.Errorf("rank %d: %s and %s are live together (ops %v and %v) but overlap in the %s arena",
						p.Rank, bx.Name, p.Buffers[j].Name, lt[i], lt[j], tier))
				}
			}
		}
		if c := p.Layout.Cache; tier == Device && c.On() && p.Memory.Arena[Device] > c.Budget {
			errs = append(errs, fmt.Errorf("rank %d: the device arena %d (peak of live bytes %d) exceeds the unified cache's budget %d", p.Rank, p.Memory.Arena[Device], p.Memory.Peak[Device], c.Budget))
		}
		if p.Memory.Arena[tier] < p.Memory.Peak[tier] {
			errs = append(errs, fmt.Errorf("rank %d: %s arena %d is smaller than the peak of live bytes %d", p.Rank, tier, p.Memory.Arena[tier], p.Memory.Peak[tier]))
		}
	}
	return errors.Join(errs...)
}

// VerifyLayout checks the programs of every rank of a layout together: each program on
// its own (Verify); every collective is run by every rank of its group, in the same order,
// with the same kind and payload; and the sends from one rank to another are matched, in
// order and size, by the other's receives.
func VerifyLayout(progs []*Program) error {
	var errs []error
	if len(progs) == 0 {
		return errors.New("no programs")
	}
	l := progs[0].Layout
	for _, p := range progs {
		if err := Verify(p); err != nil {
			errs = append(errs, err)
		}
	}
	type call struct {
		kind  OpKind
		bytes int64
		what  string
	}
	// Collectives: per (group instance, rank), the sequence of calls.
	seq := map[string]map[int][]call{}
	members := map[string][]int{}
	for _, p := range progs {
		for _, op := range p.Ops {
			if !op.Kind.Collective() {
				continue
			}
			ax, ok := AxisByName(op.Group)
			if !ok {
				errs = append(errs, fmt.Errorf("rank %d: %s over unknown group %q", p.Rank, op.Kind, op.Group))
				continue
			}
			var ranks []int
			for _, c := range ax.Members(l, p.Coord) {
				ranks = append(ranks, l.RankOf(c))
			}
			key := fmt.Sprintf("%s%v", op.Group, ranks)
			members[key] = ranks
			if seq[key] == nil {
				seq[key] = map[int][]call{}
			}
			seq[key][p.Rank] = append(seq[key][p.Rank], call{op.Kind, op.Bytes, fmt.Sprintf("%s %s (%s)", op.Phase, op.Kind, op.Attr)})
		}
	}
	keys := make([]string, 0, len(seq))
	for k := range seq {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		ranks := members[key]
		ref := seq[key][ranks[0]]
		for _, r := range ranks[1:] {
			got := seq[key][r]
			n := max(len(ref), len(got))
			for i := 0; i < n; i++ {
				switch {
				case i >= len(ref):
					errs = append(errs, fmt.Errorf("group %s: rank %d calls %s (call %d) that rank %d never calls", key, r, got[i].what, i, ranks[0]))
				case i >= len(got):
					errs = append(errs, fmt.Errorf("group %s: rank %d never calls %s (call %d of rank %d)", key, r, ref[i].what, i, ranks[0]))
				case ref[i].kind != got[i].kind || ref[i].bytes != got[i].bytes:
					errs = append(errs, fmt.Errorf("group %s: call %d is %s on rank %d but %s on rank %d", key, i, ref[i].what, ranks[0], got[i].what, r))
				default:
					continue
				}
				break
			}
		}
	}
	// Point to point: sends from a to b against receives at b from a.
	type pair struct{ from, to int }
	sends, recvs := map[pair][]int64{}, map[pair][]int64{}
	for _, p := range progs {
		for _, op := range p.Ops {
			switch op.Kind {
			case OpSend:
				sends[pair{p.Rank, op.Peer}] = append(sends[pair{p.Rank, op.Peer}], op.Bytes)
			case OpRecv:
				recvs[pair{op.Peer, p.Rank}] = append(recvs[pair{op.Peer, p.Rank}], op.Bytes)
			}
		}
	}
	var pairs []pair
	for k := range sends {
		pairs = append(pairs, k)
	}
	for k := range recvs {
		if _, ok := sends[k]; !ok {
			pairs = append(pairs, k)
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].from != pairs[j].from {
			return pairs[i].from < pairs[j].from
		}
		return pairs[i].to < pairs[j].to
	})
	for _, k := range pairs {
		s, r := sends[k], recvs[k]
		if fmt.Sprint(s) != fmt.Sprint(r) {
			errs = append(errs, fmt.Errorf("rank %d sends %v bytes to rank %d, which receives %v", k.from, s, k.to, r))
		}
	}
	if len(errs) > 0 {
		var b strings.Builder
		for i, e := range errs {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString(e.Error())
		}
		return errors.New(b.String())
	}
	return nil
}

// writesAfterCollective checks op i against the gradient reductions before it: a compute
// op must not write a parameter gradient an all-reduce or reduce-scatter has already
// summed (a contribution after its bucket's all-reduce would be left out of the sum, or
// kept on one rank only), and records i's gradient inputs when it is such a reduction.
// (An all-gather's or an all-to-all's input may be written after it: it was copied; and
// an activation's gradient may take a rank's own contribution after its tp all-reduce,
// as the residual's does.)
func writesAfterCollective(p *Program, i int, reducedAt []int) []error {
	op := &p.Ops[i]
	switch {
	case op.Kind == OpAllReduce || op.Kind == OpReduceScatter:
		for _, b := range op.In {
			if p.Buffers[b].Kind == KindGrad {
				reducedAt[b] = i
			}
		}
		return nil
	case op.Kind.Collective() || op.Kind.PointToPoint():
		return nil
	}
	var errs []error
	for _, b := range op.Out {
		if at := reducedAt[b]; at >= 0 {
			c := &p.Ops[at]
			errs = append(errs, fmt.Errorf("rank %d op %d (%s %s): writes %s after op %d (%s %s over %s) communicated it",
				p.Rank, i, op.Phase, op.Kind, p.Buffers[b].Name, at, c.Phase, c.Kind, c.Group))
			reducedAt[b] = -1 // one report per collective and buffer
		}
	}
	return errs
}
