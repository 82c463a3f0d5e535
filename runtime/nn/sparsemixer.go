package nn

import "math"

// Phi-3.5-MoE's sparsemixer routing (moe.sparsemixer_eps), as transformers' sparsemixer
// computes it in eval mode: the first expert is the best router logit, its gate the
// softmax over the logits within the threshold of it (relative: (z₁ − zⱼ) / max(|zⱼ|, z₁)
// ≤ 2·eps); the second is the best logit with the first masked out, its gate the softmax
// over the remaining logits within the threshold of that one. The gates are not
// renormalised. Training in transformers samples the experts (Gumbel) and estimates the
// gradient by Heun's method; moec trains with the deterministic form, whose gradient is
// the masked softmaxes' own (the masks are constants, as transformers computes them under
// no_grad).

// sparsemixerMasked reports whether logit z (of an expert) falls outside the threshold of
// the chosen logit best: (best − z) / max(|z|, best) > 2·eps. A 0/0 is not outside, as in
// torch's comparison of a NaN.
func sparsemixerMasked(best, z, eps float64) bool {
	return (best-z)/math.Max(math.Abs(z), best) > 2*eps
}

// sparsemixerRoute writes a token's two experts into idx (best first) and their gates into
// gate from its router logits z.
func sparsemixerRoute[F Float](z []F, eps float64, idx []int32, gate []F) {
	first := -1
	for e, v := range z {
		if first < 0 || v > z[first] {
			first = e
		}
	}
	second := -1
	for e, v := range z {
		if e != first && (second < 0 || v > z[second]) {
			second = e
		}
	}
	idx[0], idx[1] = int32(first), int32(second)
	gate[0] = F(sparsemixerGate(z, eps, first, -1))
	gate[1] = F(sparsemixerGate(z, eps, second, first))
}

// sparsemixerGate is the masked softmax of z at chosen over the experts within the
// threshold of z[chosen], the expert excluded (-1: none) left out.
func sparsemixerGate[F Float](z []F, eps float64, chosen, excluded int) float64 {
	best := float64(z[chosen])
	var sum float64
	for e, v := range z {
		if e != excluded && !sparsemixerMasked(best, float64(v), eps) {
			sum += math.Exp(float64(v) - best)
		}
	}
	return 1 / sum
}

// sparsemixerBack adds to dz (one token's logit gradients) the gradient of its two gates,
// given their gradients dg: gate k is the softmax pₖ over its set Mₖ at chosen expert iₖ,
// so ∂gₖ/∂zⱼ = gₖ·(δⱼᵢₖ − pₖⱼ) for j in Mₖ, pₖⱼ = gₖ·exp(zⱼ − z_iₖ).
func sparsemixerBack[F Float](z []F, eps float64, idx []int32, gate, dg, dz []F) {
	for k, chosen := range idx[:2] {
		excluded := -1
		if k == 1 {
			excluded = int(idx[0])
		}
		g, best := float64(gate[k]), float64(z[chosen])
		d := float64(dg[k]) * g
		for e, v := range z {
			if e == excluded || sparsemixerMasked(best, float64(v), eps) {
				continue
			}
			dz[e] -= F(d * g * math.Exp(float64(v)-best))
		}
		dz[chosen] += F(d)
	}
}
