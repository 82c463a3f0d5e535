package exec

// Expert choice for the route kernel: top k over every expert, or node-limited routing
// (moe.groups, DeepSeek-V2): the experts form groups of consecutive indices, a group
// scores its best expert, and a token takes its top k among the experts of its
// top_k_groups best groups. Only the choice changes: the gates are the chosen experts'
// scores as without groups, so the route's backward is the same.

// chooseExperts writes into order the k = len(order) experts token scores st choose, best
// first, ties to the lower index (as runtime/nn's topK and topKIn).
func (k *Kernels) chooseExperts(st []float32, order []int) {
	groups := k.d.Groups
	if groups <= 0 {
		topKOf(st, order, nil, 1)
		return
	}
	var fewScores [16]float32
	var fewChosen [16]int
	scores, chosen := fewScores[:0], fewChosen[:0]
	if groups > len(fewScores) {
		scores, chosen = make([]float32, 0, groups), make([]int, 0, groups)
	}
	scores, chosen = scores[:groups], chosen[:k.d.TopKGroups]
	size := len(st) / groups
	for g := range scores {
		best := st[g*size]
		for _, v := range st[g*size+1 : (g+1)*size] {
			best = max(best, v)
		}
		scores[g] = best
	}
	topKOf(scores, chosen, nil, 1)
	topKOf(st, order, chosen, size)
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
