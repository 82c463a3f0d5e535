package analysis

// attnParts is one attention block (self- or cross-attention) of one layer.
type attnParts struct {
	params int64 // every parameter
	matmul int64 // matmul weights (FLOPs: 2 per weight per token)
	qk     int64 // of matmul: the weights a layer skips when it reuses the attention weights of the layer below
	qkDim  int64 // per-head query/key width of QK^T
	vDim   int64 // per-head value width of AV
}

// attention counts one attention block. ownsKV is false in a layer that reuses the K/V
// projections of an earlier layer of its group (cross-layer KV sharing, share_kv > 1).
func (s *spec) attention(ownsKV bool) attnParts {
	if s.mla {
		return s.latentAttention(ownsKV)
	}
	a := &s.m.Attention
	var p attnParts
	qOut := s.mul(s.heads, s.headDim)
	kvOut := s.mul(s.kvHeads, s.headDim)
	p.qkDim, p.vDim = s.headDim, s.headDim

	q := s.mul(s.d, qOut)
	p.matmul = s.add(p.matmul, q)
	p.qk = s.add(p.qk, q)
	if a.BiasQKV {
		p.params = s.add(p.params, qOut)
	}
	if ownsKV {
		k := s.mul(s.d, kvOut)
		p.matmul = s.add(p.matmul, k, k) // keys and values
		p.qk = s.add(p.qk, k)
		if a.BiasQKV {
			p.params = s.add(p.params, s.mul(2, kvOut))
		}
	}
	p.matmul = s.add(p.matmul, s.mul(qOut, s.d)) // output projection
	if a.BiasOut {
		p.params = s.add(p.params, s.d)
	}
	if a.QKNorm {
		// Per-head norms over head_dim shared by all heads (Qwen3, Gemma 3), or with
		// qk_norm = full one norm over each whole projection (OLMoE: q_norm of heads·head_dim,
		// k_norm of kv_heads·head_dim). The key norm belongs with the key projection, so a
		// layer that shares K/V shares it too.
		// Whatever the model's norm, these are RMSNorm scales with no bias (OLMoE's and
		// Qwen3's q_norm/k_norm, and what the runtime and the Hugging Face export build).
		qw, kw := s.headDim, s.headDim
		if a.QKNormFull {
			qw, kw = qOut, kvOut
		}
		p.params = s.add(p.params, qw)
		// After rotary (HunYuan), every layer norms the rotated keys with its own norm.
		if ownsKV || a.QKNormAfterRope {
			p.params = s.add(p.params, kw)
		}
	}
	p.params = s.add(p.params, p.matmul, s.attentionExtras())
	return p
}

// latentAttention is DeepSeek-V2/V3 multi-head latent attention, laid out as the Hugging
// Face DeepseekV3Attention module: q_a_proj d→q_lora_rank, q_a_layernorm, q_b_proj
// q_lora_rank→heads·(nope+rope) (or one q_proj d→heads·(nope+rope) when q_lora_rank = 0);
// kv_a_proj_with_mqa d→kv_lora_rank+rope, kv_a_layernorm, kv_b_proj
// kv_lora_rank→heads·(nope+v); o_proj heads·v→d. As there, the attention bias sits on
// q_a_proj and kv_a_proj_with_mqa only (q_proj, q_b_proj and kv_b_proj never have one).
func (s *spec) latentAttention(ownsKV bool) attnParts {
	a := &s.m.Attention
	var p attnParts
	qDim := s.add(a.QKNopeHeadDim, a.QKRopeHeadDim)
	p.qkDim, p.vDim = qDim, a.VHeadDim

	if a.QLoraRank > 0 {
		qa, qb := s.mul(s.d, a.QLoraRank), s.mul(a.QLoraRank, s.heads, qDim)
		p.matmul = s.add(p.matmul, qa, qb)
		p.qk = s.add(p.qk, qa, qb)
		p.params = s.add(p.params, s.normParams(a.QLoraRank))
		if a.BiasQKV {
			p.params = s.add(p.params, a.QLoraRank)
		}
	} else {
		q := s.mul(s.d, s.heads, qDim)
		p.matmul = s.add(p.matmul, q)
		p.qk = s.add(p.qk, q)
	}
	if ownsKV {
		kvA := s.mul(s.d, s.add(a.KVLoraRank, a.QKRopeHeadDim))
		kvB := s.mul(a.KVLoraRank, s.heads, s.add(a.QKNopeHeadDim, a.VHeadDim))
		p.matmul = s.add(p.matmul, kvA, kvB)
		p.params = s.add(p.params, s.normParams(a.KVLoraRank))
		if a.BiasQKV {
			p.params = s.add(p.params, a.KVLoraRank, a.QKRopeHeadDim)
		}
	}
	p.matmul = s.add(p.matmul, s.mul(s.heads, a.VHeadDim, s.d))
	if a.BiasOut {
		p.params = s.add(p.params, s.d)
	}
	if a.QKNorm {
		// Scale-only RMSNorms over each head's query and key width, as in attention.
		p.params = s.add(p.params, qDim)
		if ownsKV {
			p.params = s.add(p.params, qDim)
		}
	}
	p.params = s.add(p.params, p.matmul, s.attentionExtras())
	return p
}

// attentionExtras are the per-head parameters that are neither projections nor norms:
// talking-heads mixers (Shazeer et al. 2020: one heads×heads matrix before the softmax and
// one after) and learned sink logits (one per head).
func (s *spec) attentionExtras() int64 {
	var n int64
	if s.m.Attention.TalkingHeads {
		n = s.add(n, s.mul(2, s.heads, s.heads))
	}
	if s.m.Attention.Sinks {
		n = s.add(n, s.heads)
	}
	return n
}
