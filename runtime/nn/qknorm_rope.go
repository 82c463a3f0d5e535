package nn

// q/k norms after rotary positions (attention.qk_norm_after_rope, HunYuan's
// query_layernorm and key_layernorm after apply_rotary_pos_emb): the norms read the rotated
// queries and keys, and every layer has its own key norm. A layer that shares its group's
// K/V (share_kv) norms the owner's rotated keys with its own scale: the owner keeps its
// rotated keys before the norm (kRot), which the group's layers read, and each layer's k
// holds its own normed keys.

// normsAfterRope reports whether the model norms its queries and keys after rotary
// positions.
func (c *core[F]) normsAfterRope() bool {
	a := c.cfg.Attention
	return a.QKNorm && a.QKNormAfterRope
}

// normAfterRopeFwd norms layer l's rotated queries (doQ) and its keys: an owner that
// projected its keys (doK) keeps them in kRot first; every layer norms its group's kRot
// into its own k.
func (c *core[F]) normAfterRopeFwd(l *layer[F], a *attnWS[F], n int, doQ, doK bool, eps float64) {
	d := c.d
	if doQ {
		c.qkNormFwd(a.q, a.qhat, a.qrstd, n, d.H, l.attn.qNorm, eps)
	}
	if doK {
		copy(a.kRot, a.k)
	}
	if doQ || doK {
		copy(a.k, a.kRot)
		c.qkNormFwd(a.k, a.khat, a.krstd, n, d.KV, l.attn.kNorm, eps)
	}
}

// normAfterRopeBack turns the gradients of layer l's normed queries and keys (g.dq, g.dk)
// into those of the rotated ones before the norms, accumulating the scales' gradients.
func (c *core[F]) normAfterRopeBack(l *layer[F], a *attnWS[F], g *attnGrads[F], n int) {
	d := c.d
	clear(g.dqPre)
	c.qkNormBack(g.dqPre, g.dq, a.qhat, a.qrstd, n, d.H, l.attn.qNorm)
	copy(g.dq, g.dqPre)
	clear(g.dkPre)
	c.qkNormBack(g.dkPre, g.dk, a.khat, a.krstd, n, d.KV, l.attn.kNorm)
	copy(g.dk, g.dkPre)
}
