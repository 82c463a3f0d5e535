package step

// Selective recompute (Korthikanti et al. 2022, Megatron's --recompute-granularity
// selective): the attention core's values, the [micro-batch, heads, T, T] score maps and
// attention weights, are the largest a layer keeps and the cheapest to compute again. Under
// recompute = selective the backward computes them again from the kept queries and keys
// just before the backward of their use in AV (the scores, the talking-heads mixers when
// present, the softmax, and an attention-sharing select), and keeps every other forward
// value. Under recompute = full the whole layer runs again before its backward.

// recomputesHere reports whether the backward recomputes e's layer just before e's backward:
// under full at the layer's first entry met in reverse, under selective at its AV.
func (lw *lowerer) recomputesHere(e tapeEntry) bool {
	switch {
	case lw.l.RecomputeFull():
		return true
	case lw.l.RecomputeSelective():
		return e.op.Kind == OpAttnAV
	}
	return false
}

// recomputed reports whether a layer's recomputation runs e again.
func (lw *lowerer) recomputed(e tapeEntry) bool {
	if !lw.l.RecomputeSelective() {
		return true
	}
	return attentionCore(e)
}

// attentionCore reports whether e computes the attention weights from the queries and keys.
func attentionCore(e tapeEntry) bool {
	switch e.op.Kind {
	case OpScores, OpHeadMix, OpSoftmax:
		return true
	}
	return e.share
}
