package step

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// The attention variants of Llama 4 and gpt-oss, per layer, as runtime/nn computes them:
//
//   - a sliding window (attention.window, in the layers full_every leaves windowed) or,
//     in Llama 4's rotary layers, chunked attention (attention.chunk): the softmax's Mask
//     says which keys each query attends to; the scores and products stay causal, and the
//     weights outside the mask are zero, so their backward needs no mask;
//   - learned sinks (attention.sinks): one more logit per head in the softmax's
//     denominator, the sinks' buffer the softmax's second input and their gradient the
//     softmax_bwd's second output;
//   - layers without rotary positions (attention.nope_every) emit no rotary op;
//   - unscaled RMS norms of each head's rotated queries and keys (attention.qk_l2_norm,
//     rotary layers only): qk_l2_norm and its backward;
//   - the queries of the layers without rotary positions scaled by position
//     (attention.nope_temperature): query_scale, in place, and its backward.

// Ops of the attention variants.
const (
	OpQKL2Norm      OpKind = "qk_l2_norm"      // y = x/rms(x) per head_dim piece; keeps 1/rms
	OpQKL2NormBwd   OpKind = "qk_l2_norm_bwd"  // dx (+)= rstd·(dy − y·mean(dy ⊙ y))
	OpQueryScale    OpKind = "query_scale"     // q *= 1 + τ·log(1 + ⌊(pos+1)/floor⌋), in place
	OpQueryScaleBwd OpKind = "query_scale_bwd" // dq *= the same factor, in place
)

// AttnMask says which keys each query of an attention op attends to: the causal prefix
// (the zero value), the last Window positions up to the query's, or the positions of the
// query's chunk of Chunk up to its own.
type AttnMask struct {
	Window, Chunk int
}

// Keys is the span [lo, hi) of the keys the query at position i attends to.
func (m AttnMask) Keys(i int) (lo, hi int) {
	switch {
	case m.Chunk > 0:
		return i - i%m.Chunk, i + 1
	case m.Window > 0:
		return max(0, i-m.Window+1), i + 1
	}
	return 0, i + 1
}

// Causal reports whether m is the whole causal prefix.
func (m AttnMask) Causal() bool { return m == AttnMask{} }

func (m AttnMask) String() string {
	switch {
	case m.Chunk > 0:
		return fmt.Sprintf("causal chunk=%d", m.Chunk)
	case m.Window > 0:
		return fmt.Sprintf("causal window=%d", m.Window)
	}
	return "causal"
}

// QueryTemperature is Llama 4's query scaling by position in the layers without rotary
// positions: the query at position p is multiplied by 1 + Tau·log(1 + ⌊(p+1)/Floor⌋).
type QueryTemperature struct {
	Tau, Floor float64
}

// Factor is the scale of the queries at position pos.
func (t QueryTemperature) Factor(pos int) float32 {
	return float32(1 + t.Tau*math.Log(1+math.Floor(float64(pos+1)/t.Floor)))
}

func (t QueryTemperature) String() string {
	return fmt.Sprintf("1+%g·log(1+⌊(pos+1)/%g⌋)", t.Tau, t.Floor)
}

// rotates reports whether layer l rotates its queries and keys (a rotary model, but for
// the layers nope_every leaves without positions).
func (lw *lowerer) rotates(l int) bool {
	return lw.m.Position == program.Rotary && lw.m.Attention.Rotary(l)
}

// maskOf is layer l's attention mask: its chunk in a rotary layer of a chunked model, else
// its sliding window (none in the layers full_every leaves whole).
func (lw *lowerer) maskOf(l int) AttnMask {
	a := lw.m.Attention
	if lw.rotates(l) && a.ChunkSize > 0 {
		return AttnMask{Chunk: int(a.ChunkSize)}
	}
	return AttnMask{Window: int(a.WindowAt(l))}
}

// temperatureOf is layer l's query temperature, and whether it has one: Llama 4 scales
// the queries of the layers without rotary positions.
func (lw *lowerer) temperatureOf(l int) (QueryTemperature, bool) {
	a := lw.m.Attention
	if a.NopeEvery <= 0 || a.Rotary(l) || a.NopeTemperature <= 0 {
		return QueryTemperature{}, false
	}
	return QueryTemperature{Tau: a.NopeTemperature, Floor: float64(a.NopeTemperatureFloor)}, true
}

// softmaxOp is layer l's softmax of the scores s into p, with its mask and, with sinks,
// this rank's heads' sink logits as a second input.
func (lw *lowerer) softmaxOp(l, s, p int, cond string) Op {
	in := []int{s}
	mask := lw.maskOf(l)
	attr := mask.String()
	if lw.m.Attention.Sinks {
		in = append(in, lw.w(params.ID{Role: params.RoleSinks, Layer: l, Expert: -1}))
		attr += " sinks"
	}
	B, hs, T := lw.b.MicroBatch, lw.hLocal, lw.b.SeqLen
	return Op{Kind: OpSoftmax, Layer: l, In: in, Out: []int{p}, Mask: mask, Attr: join(attr, cond),
		FLOPs: 3 * int64(B) * int64(hs) * int64(T) * int64(T) / 2}
}

// qkVariants emits what layer l does to its (rotated) queries and keys before the scores:
// the unscaled q/k norms of a rotary layer, the query temperature of a layer without
// rotary positions. at is the decoding step's positions (-1 in training and prefill,
// where a row's position is its index in its sequence). It returns the buffers the
// scores read.
func (lw *lowerer) qkVariants(l, q, k, at int, sharing bool, cond string) (int, int) {
	pre := fmt.Sprintf("L%d.", l)
	if lw.m.Attention.QKL2Norm && lw.rotates(l) {
		q = lw.qkL2Norm(pre+"q_l2", q, l, sharing, cond)
		k = lw.qkL2Norm(pre+"k_l2", k, l, sharing, cond)
	}
	if t, ok := lw.temperatureOf(l); ok {
		in := []int{q}
		if at >= 0 {
			in = append(in, at)
		}
		lw.fwd(Op{WhenRecompute: sharing, Kind: OpQueryScale, Layer: l, In: in, Out: []int{q}, Temperature: t,
			Attr: join("q *= "+t.String(), cond), FLOPs: lw.p.Buffers[q].Elements()})
	}
	return q, k
}

// qkL2Norm emits the unscaled RMS norm of each head_dim piece of x into a new buffer.
func (lw *lowerer) qkL2Norm(name string, x, l int, sharing bool, cond string) int {
	sh := lw.p.Buffers[x].Shape
	y := lw.act(name, KindActivation, sh...)
	rstd := lw.act(name+".rstd", KindActivation, int(lw.p.Buffers[x].Elements())/lw.d.Dh)
	lw.fwd(Op{WhenRecompute: sharing, Kind: OpQKL2Norm, Layer: l, In: []int{x}, Out: []int{y, rstd},
		Attr: join(fmt.Sprintf("per head_dim=%d eps=%g", lw.d.Dh, lw.d.NormEps), cond), FLOPs: 4 * lw.p.Buffers[x].Elements()})
	return y
}

// attnVariantBackward emits the backward of the attention variants' own ops; it reports
// whether op was one.
func (lw *lowerer) attnVariantBackward(op Op) bool {
	switch op.Kind {
	case OpQKL2Norm:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		dx := lw.gradFor(op.In[0])
		b := Op{Kind: OpQKL2NormBwd, Layer: op.Layer, In: []int{dy, op.Out[0], op.Out[1]}, Out: []int{dx}, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, dx)
		lw.bwd(b)
	case OpQueryScale:
		if dq, ok := lw.gradOf[op.Out[0]]; ok {
			lw.bwd(Op{Kind: OpQueryScaleBwd, Layer: op.Layer, In: []int{dq}, Out: []int{dq}, Temperature: op.Temperature, Attr: op.Attr, FLOPs: op.FLOPs})
		}
	default:
		return false
	}
	return true
}

// softmaxBackward is the softmax's backward: the scores' gradient, and with sinks the
// sink logits' (−Σ over the rows of p_sink·rowsum(dP ⊙ P), p_sink = 1 − Σ p).
func (lw *lowerer) softmaxBackward(op Op) {
	dp, ok := lw.gradOf[op.Out[0]]
	if !ok {
		return
	}
	outs := []int{lw.gradFor(op.In[0])}
	if len(op.In) > 1 {
		dsinks, _ := lw.paramGrad(op.In[1])
		outs = append(outs, dsinks)
	}
	b := Op{Kind: OpSoftmaxBwd, Layer: op.Layer, In: []int{dp, op.Out[0]}, Out: outs, Mask: op.Mask, Attr: op.Attr, FLOPs: op.FLOPs}
	lw.writeGrads(&b, outs...)
	lw.bwd(b)
}
