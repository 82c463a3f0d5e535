package nn

// The per-layer, per-position attention rules that Step (decode.go) and Feed
// (decode_prefill.go) share: which keys a query at position p sees (layer.keyRange: the
// layer's window under full_every, or its Llama 4 chunk), whether the layer rotates
// (nope_every), the q/k norms after rotation (qk_norm_after_rope, qk_l2_norm) and the query
// temperature (nope_temperature). Both decoders prepare each row with positionRow and
// take each query's keys from keyRange, so the two cannot drift apart.

// positionRow applies layer l's positional rules to one row at position pos: it rotates
// the query q (H heads) and, when the layer owns its cache, the key k (KV heads), applies
// the norms that follow rotation and the query temperature, and writes the row's key and
// value v into the layer's caches at row slot (the sequence's first row plus pos, rows of
// KV·Dh). hat and rstd are scratch for one row's norms (H·Dh and H).
func (dec *Decoder) positionRow(l *layer[float32], li int, q, k, v []float32, slot, pos int, hat, rstd []float32) {
	c, d := dec.c, dec.c.d
	eps := d.NormEps
	owns := l.kvOwner == li
	after := c.normsAfterRope()
	rotary := dec.rope != nil && l.llama.rotary
	if rotary {
		dec.rope.rotate(q, d.H, pos, false)
	}
	if after {
		c.qkNormFwd(q, hat, rstd, 1, d.H, l.attn.qNorm, eps)
	}
	if l.llama.l2 { // llama4.go
		l2NormRows(q, rstd, 1, d.H, d.Dh, eps)
	}
	if l.llama.temperature != 0 {
		scal(q, float32(l.llama.queryScale(pos)))
	}
	kc, vc := dec.kc[li], dec.vc[li]
	at := slot * d.KVDim
	if owns {
		if rotary {
			dec.rope.rotate(k, d.KV, pos, false)
		}
		if l.llama.l2 {
			l2NormRows(k, rstd, 1, d.KV, d.Dh, eps)
		}
		copy(kc[at:at+d.KVDim], k)
		copy(vc[at:at+d.KVDim], v)
	}
	if after { // the cache holds this layer's normed keys; k keeps the group's rotated ones
		copy(kc[at:at+d.KVDim], k)
		c.qkNormFwd(kc[at:at+d.KVDim], hat, rstd, 1, d.KV, l.attn.kNorm, eps)
	}
}
