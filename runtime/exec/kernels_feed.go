package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// feedOp runs a feeding program's own ops (step.LowerFeed): a row whose sequence is −1
// is padding, which writes no cache and attends to nothing.
func (e *Executor) feedOp(op *step.Op) {
	switch op.Kind {
	case step.OpKVAppendRows:
		k, pos, seq, kc := e.f32[op.In[0]], e.i32[op.In[len(op.In)-2]], e.i32[op.In[len(op.In)-1]], e.f32[op.Out[0]]
		var v, vc []float32 // none where a layer caches its own keys alone (qk_norm_after_rope)
		if len(op.Out) > 1 {
			v, vc = e.f32[op.In[1]], e.f32[op.Out[1]]
		}
		// [sequences, maxLen, width]: the keys' and the values' widths differ under latent
		// attention (qk_nope+qk_rope features a head against v_head_dim).
		maxLen := e.p.Buffers[op.Out[0]].Shape[1]
		appendRows(k, kc, pos, seq, maxLen)
		if vc != nil {
			appendRows(v, vc, pos, seq, maxLen)
		}
	case step.OpAttnRows:
		in := step.AttnInputsOf(op)
		pos, seq := e.i32[in.Pos], e.i32[in.Seq]
		w := len(e.f32[op.Out[0]]) / len(seq)
		for r, s := range seq {
			if s < 0 {
				clear(e.f32[op.Out[0]][r*w : (r+1)*w])
				continue
			}
			e.attendRow(op, r, int(s), int(pos[r]))
		}
	case step.OpMLAAttnRows: // kernels_feed_mla.go
		e.MLAAttnRows(e.f32[op.In[0]], e.f32[op.In[1]], e.f32[op.In[2]], e.i32[op.In[3]], e.i32[op.In[4]], e.f32[op.Out[0]],
			e.p.Buffers[op.In[1]].Shape[1], op.Mask)
	case step.OpPickRows:
		x, last, y := e.f32[op.In[0]], e.i32[op.In[1]], e.f32[op.Out[0]]
		w := len(y) / len(last)
		for b, r := range last {
			if r < 0 {
				clear(y[b*w : (b+1)*w])
				continue
			}
			copy(y[b*w:(b+1)*w], x[int(r)*w:(int(r)+1)*w])
		}
	}
}

// appendRows writes each row of x ([rows, width]) into cache ([sequences, maxLen, width])
// at its sequence's row and its position; a padding row (sequence −1) writes nothing.
func appendRows(x, cache []float32, pos, seq []int32, maxLen int) {
	w := len(x) / len(seq)
	for r, s := range seq {
		if s < 0 {
			continue
		}
		at := (int(s)*maxLen + int(pos[r])) * w
		copy(cache[at:at+w], x[r*w:(r+1)*w])
	}
}

// Feed runs a feeding program (step.LowerFeed): runs[i] joins sequence i's caches at
// positions pos[i], pos[i]+1, … (an empty run sits the step out), every run's tokens one
// batch of rows, and the logits of each sequence's last row come back ([sequences,
// vocab], reused by the next call; a sequence that sat out gets zeros). The rows beyond
// the runs' are padding. This is runtime/nn's Decoder.Feed.
func (e *Executor) Feed(runs [][]int32, pos []int) ([]float32, error) {
	tok, at, seq, last, logits := e.named("tokens@0"), e.named("pos"), e.named(step.FeedSeq), e.named(step.FeedLast), e.named("logits@0")
	if tok < 0 || at < 0 || seq < 0 || last < 0 || logits < 0 {
		return nil, fmt.Errorf("exec: program %s is not a feeding program", e.p.Model)
	}
	toks, ats, seqs, lasts := e.i32[tok], e.i32[at], e.i32[seq], e.i32[last]
	if len(runs) != len(lasts) || len(pos) != len(lasts) {
		return nil, fmt.Errorf("exec: %d runs and %d positions for a feed of %d sequences", len(runs), len(pos), len(lasts))
	}
	maxLen := e.p.Buffers[e.named(fmt.Sprintf("L%d.k_cache", e.p.FirstLayer))].Shape[1]
	if err := step.PackFeed(runs, pos, maxLen, e.d.MaxPos, e.d.V, toks, ats, seqs, lasts); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	return e.runInference(logits)
}
