package nn

import "fmt"

// Auxiliary-loss-free balancing (DeepSeek-V3's noaux_tc, arXiv:2412.19437 section 2.1.2):
// each MoE layer keeps a selection bias b (e_score_correction_bias). A token's experts are
// the top_k of s + b, where s are the router's scores; with groups a group's score is the
// sum of its two best biased scores (DeepseekV3TopkRouter) and the token chooses among
// its top_k_groups best groups. The gates are the unbiased scores of the chosen experts
// (renormalised with normalize, times routed_scale). b takes no gradient: after each
// training step UpdateRouterBias moves b_e by aux_free_bias·sign(mean load − load_e).
// b is a listed parameter so that it travels with the weights (checkpoints, exports,
// expert-parallel ranks); its gradient is always zero, so AdamW, which does not decay
// vectors, leaves it where UpdateRouterBias puts it.

// chooseBiased writes the token's chosen experts (best biased score first) into idx.
func (c *core[F]) chooseBiased(mp *moeParams[F], w *moeWS[F], st []F, idx []int32) {
	d := c.d
	biased := w.biased
	for e, v := range st {
		biased[e] = v + mp.correction.w[e]
	}
	if d.Groups == 0 {
		topK(biased, idx)
		return
	}
	size := d.E / d.Groups
	for g := range w.gScore {
		grp := biased[g*size : (g+1)*size]
		best, second := topTwo(grp)
		w.gScore[g] = best
		if len(grp) > 1 {
			w.gScore[g] += second
		}
	}
	topK(w.gScore, w.gIdx)
	topKIn(biased, idx, size, w.gIdx)
}

// topTwo returns the largest and second-largest of s (len(s) ≥ 1; second is the largest
// again for one value).
func topTwo[F Float](s []F) (best, second F) {
	i := 0
	for j, v := range s {
		if v > s[i] {
			i = j
		}
	}
	best, second = s[i], s[i]
	first := true
	for j, v := range s {
		if j != i && (first || v > second) {
			second, first = v, false
		}
	}
	return best, second
}

// UpdateRouterBias applies the aux-free balancing update after a training step: loads holds,
// per MoE layer in order (as Stats.ExpertTokens), the assignments each expert processed
// over the whole step (all micro-batches), and every layer with a selection bias
// moves it by aux_free_bias · sign(mean load − load_e). A model without aux_free_bias
// ignores it.
func (m *Model) UpdateRouterBias(loads [][]int) error {
	c := m.c
	cfg := c.cfg.MoE
	if cfg == nil || cfg.AuxFreeBias <= 0 {
		return nil
	}
	rate := float32(cfg.AuxFreeBias)
	li := 0
	for _, l := range c.layers {
		if l.moe == nil {
			continue
		}
		if li >= len(loads) {
			return fmt.Errorf("nn: router bias update: loads for %d MoE layers, the model has more", len(loads))
		}
		load := loads[li]
		li++
		if l.moe.correction == nil {
			continue
		}
		if len(load) != c.d.E {
			return fmt.Errorf("nn: router bias update: %d expert loads in MoE layer %d, the model has %d experts", len(load), li-1, c.d.E)
		}
		total := 0
		for _, v := range load {
			total += v
		}
		mean := float64(total) / float64(len(load))
		b := l.moe.correction.w
		for e, v := range load {
			switch {
			case float64(v) < mean:
				b[e] += rate
			case float64(v) > mean:
				b[e] -= rate
			}
		}
	}
	if li != len(loads) {
		return fmt.Errorf("nn: router bias update: loads for %d MoE layers, the model has %d", len(loads), li)
	}
	return nil
}
