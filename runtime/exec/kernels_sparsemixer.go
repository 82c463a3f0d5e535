package exec

import "math"

// Phi-3.5-MoE's sparsemixer routing (moe.sparsemixer_eps) in the route op and its
// backward, as runtime/nn computes it (transformers' sparsemixer in eval mode): the first
// expert is the best router logit, its gate the softmax over the logits within the
// threshold of it, (z₁ − zⱼ) / max(|zⱼ|, z₁) ≤ 2·eps; the second the best logit but the
// first, its gate the softmax over the others within the threshold of it. The masks are
// constants of the backward, as transformers computes them without gradient; moec trains
// with this deterministic form (transformers' training samples the experts).

// outsideThreshold reports whether logit z falls outside the threshold of the chosen logit
// best (a 0/0 does not, as torch compares a NaN).
func outsideThreshold(best, z, eps float64) bool {
	return (best-z)/math.Max(math.Abs(z), best) > 2*eps
}

// sparsemixerChoose writes one token's two experts (best first) into order and returns
// their gates, from its router logits z.
func sparsemixerChoose(z []float32, eps float64, order []int) (float32, float32) {
	first, second := 0, -1
	for ex, v := range z {
		if v > z[first] {
			first = ex
		}
	}
	for ex, v := range z {
		if ex != first && (second < 0 || v > z[second]) {
			second = ex
		}
	}
	order[0], order[1] = first, second
	return float32(maskedSoftmaxAt(z, eps, first, -1)), float32(maskedSoftmaxAt(z, eps, second, first))
}

// maskedSoftmaxAt is the softmax at chosen over the logits within the threshold of
// z[chosen], skip (-1: none) left out.
func maskedSoftmaxAt(z []float32, eps float64, chosen, skip int) float64 {
	best := float64(z[chosen])
	var sum float64
	for ex, v := range z {
		if ex != skip && !outsideThreshold(best, float64(v), eps) {
			sum += math.Exp(float64(v) - best)
		}
	}
	return 1 / sum
}

// sparsemixerGrad adds to dz, one token's logit gradient, its two gates' gradient: gate k
// is a softmax pₖ at expert iₖ over its set Mₖ, so ∂gₖ/∂zⱼ = gₖ·(δⱼᵢₖ − pₖⱼ) on Mₖ with
// pₖⱼ = gₖ·exp(zⱼ − z_iₖ).
func sparsemixerGrad(z []float32, eps float64, idx []int32, gates, dg, dz []float32) {
	for k := 0; k < 2; k++ {
		chosen, skip := int(idx[k]), -1
		if k == 1 {
			skip = int(idx[0])
		}
		g, best := float64(gates[k]), float64(z[chosen])
		d := float64(dg[k]) * g
		for ex, v := range z {
			if ex != skip && !outsideThreshold(best, float64(v), eps) {
				dz[ex] -= float32(d * g * math.Exp(float64(v)-best))
			}
		}
		dz[chosen] += float32(d)
	}
}
