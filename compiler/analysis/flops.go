package analysis

import "github.com/moec-dev/moec/compiler/program"

// flops follows the conventions documented on FLOPs.
func (s *spec) flops(seqLen int64) FLOPs {
	if seqLen <= 0 {
		seqLen = s.m.SeqLen
	}
	f := FLOPs{SeqLen: seqLen}
	causal := causalContext(seqLen, s.m.Attention.Window)
	full := float64(seqLen)

	s.eachLayer(func(lp layerPart) {
		ctx := causal
		if lp.Encoder {
			ctx = full
		}
		mat, att := s.layerFLOPs(lp, ctx)
		if lp.Cross {
			att += s.attentionFLOPs(lp.cross, full, 1)
		}
		f.MatmulPerToken += mat
		f.AttentionPerToken += att
		f.RouterPerToken += 2 * float64(lp.router)
	})
	// The head multiplies by the (padded) vocabulary matrix whether or not it is tied.
	f.HeadPerToken = 2 * float64(s.vocab) * float64(s.d)
	f.MatmulPerToken += f.HeadPerToken
	f.ForwardPerToken = f.MatmulPerToken + f.AttentionPerToken

	for k := 0; k < s.m.MTPDepth; k++ {
		lp, _, _ := s.mtpModule(k)
		// An MTP module is a stack of one: it always computes its own attention weights.
		lp.Index = 0
		mat, att := s.layerFLOPs(lp, causal)
		f.MTPPerToken += mat + att + f.HeadPerToken
	}
	f.TrainPerToken = 3 * (f.ForwardPerToken + f.MTPPerToken)
	return f
}

// layerFLOPs returns the matmul and self-attention FLOPs per token of one layer whose
// self-attention reads ctx positions on average.
func (s *spec) layerFLOPs(lp layerPart, ctx float64) (matmul, attention float64) {
	p := 1.0
	if lp.Index > 0 {
		p = s.share
	}
	matmul = 2 * (float64(lp.matmul) - (1-p)*float64(lp.qk))
	return matmul, s.attentionFLOPs(lp.self, ctx, p)
}

// attentionFLOPs is QK^T (and the talking-heads mixers), weighted by the probability p that
// the layer computes its own attention weights, plus AV.
func (s *spec) attentionFLOPs(a attnParts, ctx, p float64) float64 {
	h := float64(s.heads)
	scores := 2 * ctx * h * float64(a.qkDim)
	if s.m.Attention.TalkingHeads {
		scores += 2 * 2 * ctx * h * h
	}
	return p*scores + 2*ctx*h*float64(a.vDim)
}

// causalContext is the mean number of keys a query attends to in causal self-attention over
// a sequence of seq positions: position i (0-based) sees min(i+1, window) keys.
func causalContext(seq, window int64) float64 {
	if seq <= 0 {
		return 0
	}
	if window <= 0 || window >= seq {
		return float64(seq+1) / 2
	}
	w := float64(window)
	sum := w*(w+1)/2 + float64(seq-window)*w
	return sum / float64(seq)
}

// StageFLOPs returns the FLOPs per token of a curriculum stage's model (see
// program.StageModel) at the train block's sequence length (the model's when 0).
func StageFLOPs(base *program.Model, t *program.Train, st *program.Stage) FLOPs {
	return CountFLOPs(program.StageModel(base, st), t.SeqLen)
}
