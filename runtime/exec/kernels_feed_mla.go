package exec

import (
	"math"

	"github.com/moec-dev/moec/compiler/step"
)

// MLAAttnRows is latent attention in a feeding program (compiler/step's mla_attn_rows):
// row r's query (its local heads, q [rows, H·(qk_nope+qk_rope)]) against sequence
// seq[r]'s caches ([sequences, maxLen, H·qk] keys, [sequences, maxLen, H·v_head_dim]
// values) over the keys mask allows at position pos[r]: o = softmax(q·kᵀ·scale)·v per
// head, as MLAAttnDecode for one row per sequence. A padding row (sequence −1) gets zeros.
func (k *Kernels) MLAAttnRows(q, kc, vc []float32, pos, seq []int32, o []float32, maxLen int, mask step.AttnMask) {
	md := k.mlaShape()
	qk := md.Nope + md.Rope
	rows := len(pos)
	H := len(q) / (rows * qk)
	scale := float64(k.m.LatentSoftmaxScale())
	parallel(rows*H, func(i0, i1 int) {
		w := make([]float64, maxLen)
		for rh := i0; rh < i1; rh++ {
			r, h := rh/H, rh%H
			out := o[r*H*md.V+h*md.V : r*H*md.V+(h+1)*md.V]
			clear(out)
			s := int(seq[r])
			if s < 0 {
				continue
			}
			lo, hi := mask.Keys(int(pos[r]))
			qv := q[r*H*qk+h*qk : r*H*qk+(h+1)*qk]
			mx := math.Inf(-1)
			for j := lo; j < hi; j++ {
				at := (s*maxLen+j)*H*qk + h*qk
				kv := kc[at : at+qk]
				var dot float32
				for i, x := range qv {
					dot += x * kv[i]
				}
				w[j] = float64(dot) * scale
				mx = math.Max(mx, w[j])
			}
			var sum float64
			for j := lo; j < hi; j++ {
				w[j] = math.Exp(w[j] - mx)
				sum += w[j]
			}
			for j := lo; j < hi; j++ {
				p := float32(w[j] / sum)
				at := (s*maxLen+j)*H*md.V + h*md.V
				for i, x := range vc[at : at+md.V] {
					out[i] += p * x
				}
			}
		}
	})
}
