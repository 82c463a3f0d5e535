package cudastep

import (
	"fmt"
	"slices"
)

// Communicators per rank group: a collective over a group of the layout's ranks (a tp
// group of dp 2 × tp 2, the expert data-parallel pairs of dp 4 × ep 2, or every rank) runs
// on the NCCL communicator of exactly that group's ranks. The lowering lists each distinct
// group a rank's program communicates over once (Lowered.Comms), sorted by their ranks, and
// each call names its communicator; the host program holds one ncclComm_t per group
// (s->comms) and joins them in that order (moec_step_join: one ncclCommInitRank each, from
// the unique id the group's first rank created). Every rank joins its communicators in the
// same global order, so the blocking joins cannot wait on each other in a cycle.

// Comm is one NCCL communicator a rank's program uses: the ranks of its group in group
// order and this rank's place among them (its NCCL rank in the communicator).
type Comm struct {
	Ranks []int
	Index int
	// Axes are the compiler/step axes whose groups these ranks are ("dp", "tp", ...;
	// several when two axes give the same ranks).
	Axes []string
}

// Key names the communicator's group the same way on every rank: its ranks.
func (c Comm) Key() string { return fmt.Sprint(c.Ranks) }

// groupComm is the index in Lowered.Comms of the communicator over ranks (the rank's
// group over axis), added the first time a collective uses it, and this rank's place in
// it. The list stays sorted by ranks (comparing rank lists), so every rank that shares
// communicators joins them in the same order; the calls' indices are fixed once lowering
// ends (commOrder).
func (lw *opLowerer) groupComm(axis string, ranks []int) (int, int, error) {
	pos := slices.Index(ranks, lw.p.Rank)
	if pos < 0 {
		return 0, 0, fmt.Errorf("rank %d is not in its own %s group %v", lw.p.Rank, axis, ranks)
	}
	for i, c := range lw.out.Comms {
		if slices.Equal(c.Ranks, ranks) {
			if !slices.Contains(c.Axes, axis) {
				lw.out.Comms[i].Axes = append(lw.out.Comms[i].Axes, axis)
			}
			return i, pos, nil
		}
	}
	lw.out.Comms = append(lw.out.Comms, Comm{Ranks: slices.Clone(ranks), Index: pos, Axes: []string{axis}})
	return len(lw.out.Comms) - 1, pos, nil
}

// sortComms orders Lowered.Comms by their ranks and renumbers every collective's calls to
// match: the order every rank joins its communicators in.
func sortComms(low *Lowered) {
	order := make([]int, len(low.Comms))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return slices.Compare(low.Comms[a].Ranks, low.Comms[b].Ranks) })
	renumber := make([]int, len(order))
	sorted := make([]Comm, len(order))
	for to, from := range order {
		renumber[from] = to
		sorted[to] = low.Comms[from]
	}
	low.Comms = sorted
	for _, ol := range low.Ops {
		if ol.Collective == nil {
			continue
		}
		for i := range ol.Collective.Calls {
			ol.Collective.Calls[i].Comm = renumber[ol.Collective.Calls[i].Comm]
		}
		if st := ol.Collective.Staged; st != nil {
			st.Comm = renumber[st.Comm]
		}
	}
}
