package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
)

// Q/k norms over the whole projections (qk_norm = full, OLMoE's) under tensor
// parallelism, as Megatron-Core splits a norm over a tensor-parallel hidden dimension:
// each tp rank holds its heads' columns of the projection and the same columns of the
// scale (holds, lower.go: the scale splits with the heads, so its gradient is the rank's
// own and is not reduced). A token's statistics span every rank's columns: the forward
// sums the squares of the rank's columns (qk_norm_sumsq), all-reduces the sums over tp,
// and normalises by the whole width (qk_norm with the sums as its third input); the
// backward sums the rank's part of Σ g ⊙ x̂ (qk_norm_bwd_dot), all-reduces it over tp,
// and finishes dx with the whole width's mean (qk_norm_bwd with the sums as its fifth
// input). The width a kernel divides by is the scale's local width times tp.

// Ops of the whole-projection q/k norms under tensor parallelism.
const (
	OpQKNormSumSq  OpKind = "qk_norm_sumsq"   // ss = Σ x² per row (the rank's columns)
	OpQKNormBwdDot OpKind = "qk_norm_bwd_dot" // s = Σ (dy ⊙ w) ⊙ x̂ per row (the rank's columns)
)

// qkNormSplit reports whether the q/k norms span columns that tensor parallelism splits
// over ranks (qk_norm = full under tp): their statistics are all-reduced over tp.
func (lw *lowerer) qkNormSplit() bool {
	return lw.l.TP > 1 && lw.m.Attention.QKNorm && lw.m.Attention.QKNormFull
}

// qkNormStats emits, for the norm of x under tp, the rows' sums of squares over the
// whole projection: this rank's part, then their all-reduce over tp. It returns the sums'
// buffer, the third input of the qk_norm op.
func (lw *lowerer) qkNormStats(name string, x, l int, sharing bool, cond string) int {
	width := lw.p.Buffers[x].Shape[len(lw.p.Buffers[x].Shape)-1]
	rows := int(lw.p.Buffers[x].Elements()) / width
	ss := lw.act(name+".sumsq", KindActivation, rows)
	lw.fwd(Op{WhenRecompute: sharing, Kind: OpQKNormSumSq, Layer: l, In: []int{x}, Out: []int{ss},
		Attr: join("this rank's columns", cond), FLOPs: 2 * lw.p.Buffers[x].Elements()})
	lw.reduceTP(ss, l)
	return ss
}

// qkNormSplitBackward emits the backward of a qk_norm op whose statistics were
// all-reduced over tp (op.In[2] the sums of squares): this rank's part of Σ g ⊙ x̂, its
// all-reduce over tp, then dx and the scale's (local) gradient.
func (lw *lowerer) qkNormSplitBackward(op Op, dy int) {
	x, w, rstd := op.In[0], op.In[1], op.Out[1]
	dot := lw.act(fmt.Sprintf("%s.dot", lw.p.Buffers[op.Out[0]].Name), KindActGrad, lw.p.Buffers[rstd].Shape...)
	lw.bwd(Op{Kind: OpQKNormBwdDot, Layer: op.Layer, In: []int{dy, x, w, rstd}, Out: []int{dot},
		Attr: "this rank's columns", FLOPs: 3 * lw.p.Buffers[x].Elements()})
	lw.bwd(Op{Kind: OpAllReduce, Layer: op.Layer, In: []int{dot}, Out: []int{dot}, Group: "tp", Attr: "sum (the norm's columns on every tp rank)",
		Bytes: lw.p.Buffers[dot].Bytes()})
	dx := lw.gradFor(x)
	dw, _ := lw.paramGrad(w)
	b := Op{Kind: OpQKNormBwd, Layer: op.Layer, In: []int{dy, x, w, rstd, dot}, Out: []int{dx, dw}, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
	lw.writeGrads(&b, dx, dw)
	lw.bwd(b)
}

// qkNormScaleSplits reports whether the scale of role splits over tp with the heads.
func (lw *lowerer) qkNormScaleSplits(r params.Role) bool {
	return lw.qkNormSplit() && (r == params.RoleQNorm || r == params.RoleKNorm)
}
