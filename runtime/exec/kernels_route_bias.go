package exec

// Auxiliary-loss-free balancing (moe.aux_free_bias; compiler/step's routing_bias.go): the
// route kernel with a per-expert selection bias, the step's load count and the bias's
// update after the optimizer.

// RouteBiased is Route choosing each token's experts by its scores plus bias (with
// moe.groups, a group scores the sum of its two best biased scores, as DeepSeek-V3's
// router); the gates, the balance and z-loss terms stay those of the unbiased scores, so
// RouteBwd is the same.
func (k *Kernels) RouteBiased(bias, z []float32, idx []int32, gates, sc, lse []float32, slot, kept, routed []int32, aux []float32, slots int, packed, recomputed bool) {
	k.route(bias, z, idx, gates, sc, lse, slot, kept, routed, aux, slots, packed, recomputed)
}

// chooseBiased writes into order the experts a token with scores st chooses by st + bias,
// best first, ties to the lower index; biased is working space of len(st).
func (k *Kernels) chooseBiased(st, bias, biased []float32, order []int) {
	for e, v := range st {
		biased[e] = v + bias[e]
	}
	k.chooseInGroups(biased, order, topTwoSum)
}

// topTwoSum is the sum of the largest and the second-largest of s (the largest alone when
// s has one value), as runtime/nn's group score under a selection bias.
func topTwoSum(s []float32) float32 {
	best := 0
	for j, v := range s {
		if v > s[best] {
			best = j
		}
	}
	if len(s) == 1 {
		return s[best]
	}
	second := -1
	for j, v := range s {
		if j != best && (second < 0 || v > s[second]) {
			second = j
		}
	}
	return s[best] + s[second]
}

// ExpertLoad writes (acc: adds) a micro-batch's kept assignments per expert into loads.
func ExpertLoad(kept []int32, loads []float32, acc bool) {
	if !acc {
		clear(loads)
	}
	for e, n := range kept {
		loads[e] += float32(n)
	}
}

// RouterBiasBwd writes the selection bias's gradient: zeros (acc: nothing to add).
func RouterBiasBwd(dbias []float32, acc bool) {
	if !acc {
		clear(dbias)
	}
}

// RouterBiasUpdate moves the selection bias by rate·sign(mean load − load_e): up for an
// expert below the mean load, down above it. The bias's element e is target[at+e] where
// that lies in target (a flat parameter shard holds part of it, or none).
func RouterBiasUpdate(loads, target []float32, at int64, rate float64) {
	var total float64
	for _, v := range loads {
		total += float64(v)
	}
	mean := total / float64(len(loads))
	r := float32(rate)
	for e, v := range loads {
		i := at + int64(e)
		if i < 0 || i >= int64(len(target)) {
			continue
		}
		switch {
		case float64(v) < mean:
			target[i] += r
		case float64(v) > mean:
			target[i] -= r
		}
	}
}
