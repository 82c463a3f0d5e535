package program

import "math"

// LatentAttention reports whether the layers use multi-head latent attention (DeepSeek-V2/V3):
// MLA, or a positive kv_lora_rank.
func (a Attention) LatentAttention() bool { return a.MLA || a.KVLoraRank > 0 }

// LatentSoftmaxScale is the factor on a latent-attention score q·k: 1/sqrt(qk_nope_head_dim +
// qk_rope_head_dim), times mscale² where a yarn scaling has mscale_all_dim (transformers'
// yarn_apply_mscale, DeepSeek's softmax_scale · mscale · mscale), mscale being
// 0.1·mscale_all_dim·ln(factor) + 1 for a factor above one.
func (m *Model) LatentSoftmaxScale() float64 {
	a := m.Attention
	scale := 1 / math.Sqrt(float64(a.QKNopeHeadDim+a.QKRopeHeadDim))
	if rs := m.RopeScaling; rs != nil && rs.MscaleAllDim != 0 && rs.Factor > 1 {
		mscale := 0.1*rs.MscaleAllDim*math.Log(rs.Factor) + 1
		scale *= mscale * mscale
	}
	return scale
}
