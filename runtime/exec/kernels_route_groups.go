package exec

import "slices"

// Expert choice for the route kernel: top k over every expert, or node-limited routing
// (moe.groups, DeepSeek-V2): the experts form groups of consecutive indices, a group
// scores its best expert, and a token takes its top k among the experts of its
// top_k_groups best groups. Only the choice changes: the gates are the chosen experts'
// scores as without groups, so the route's backward is the same.

// chooseExperts writes into order the k = len(order) experts token scores st choose, best
// first, ties to the lower index (as runtime/nn's topK and topKIn).
func (k *Kernels) chooseExperts(st []float32, order []int) {
	k.chooseInGroups(st, order, slices.Max[[]float32])
}

// chooseInGroups writes into order the len(order) best of s, best first, ties to the lower
// index; under node-limited routing (groups) only within the topk_groups groups whose
// groupScore of their values is best (the largest for plain routing, the two largest
// summed under a selection bias).
func (k *Kernels) chooseInGroups(s []float32, order []int, groupScore func([]float32) float32) {
	groups := k.d.Groups
	if groups <= 0 {
		topKOf(s, order, nil, 1)
		return
	}
	var fewScores [16]float32
	var fewChosen [16]int
	scores, chosen := fewScores[:0], fewChosen[:0]
	if groups > len(fewScores) {
		scores, chosen = make([]float32, 0, groups), make([]int, 0, groups)
	}
	scores, chosen = scores[:groups], chosen[:k.d.TopKGroups]
	size := len(s) / groups
	for g := range scores {
		scores[g] = groupScore(s[g*size : (g+1)*size])
	}
	topKOf(scores, chosen, nil, 1)
	topKOf(s, order, chosen, size)
}

// topKOf writes the len(order) best of s, best first, ties to the lower index: k passes of
// a max. With allowed, only the indices i whose group i/size is listed compete.
func topKOf(s []float32, order, allowed []int, size int) {
	for j := range order {
		best := -1
		for i, v := range s {
			if taken(order[:j], i) || allowed != nil && !taken(allowed, i/size) {
				continue
			}
			if best < 0 || v > s[best] {
				best = i
			}
		}
		order[j] = best
	}
}
