package kernels

import "math"

// The non-MoE kernels a MoE training step needs around the experts: RMSNorm, rotary,
// attention softmax with shared-weights reuse, cross-entropy and the AdamW update.

func (sh Shape) denseConsts() []ShapeConst {
	return []ShapeConst{ci("d", sh.DModel), ci("nh", sh.Heads), ci("hd", sh.HeadDim), ci("half", sh.HeadDim/2),
		ci("v", sh.Vocab), cf("eps", sh.NormEps), cf("scale", float32(1/math.Sqrt(float64(sh.HeadDim))))}
}

func (sh Shape) rmsnormFwd() *Kernel {
	t, c := v("t"), v("c")
	x := ld("norm_in", at2(t, cD(), c))
	return &Kernel{Name: "rmsnorm_fwd", Doc: "RMSNorm of each row; keeps 1/rms for the backward pass.",
		Consts: sh.denseConsts(),
		Params: []Param{in("norm_in", F32, mul(rn(), cD())), in("norm_w", F32, cD()), out("norm_out", F32, mul(rn(), cD())),
			out("norm_rstd", F32, rn()), scalar("n", I64)},
		Grid: []Dim{dim("t", rn())},
		Body: []Stmt{
			local("ss", fc(0)),
			vloop("c", ic(0), cD(), set("ss", add(v("ss"), mul(x, x)))),
			local("rstd", div(fc(1), sqrt(add(div(v("ss"), tof(cD())), v("eps"))))),
			store("norm_rstd", t, v("rstd")),
			vloop("c", ic(0), cD(), store("norm_out", at2(t, cD(), c), mul3(x, v("rstd"), ld("norm_w", c))))},
		Ref: sh.refRMSNormFwd}
}

// rmsnormBwd: dx = rstd*w*dy - x * rstd^3 * <dy*w, x> / D.
func (sh Shape) rmsnormBwd() *Kernel {
	t, c := v("t"), v("c")
	x := ld("norm_in", at2(t, cD(), c))
	dyw := mul(ld("d_norm_out", at2(t, cD(), c)), ld("norm_w", c))
	return &Kernel{Name: "rmsnorm_bwd", Doc: "RMSNorm backward with respect to the input rows.",
		Consts: sh.denseConsts(),
		Params: []Param{in("d_norm_out", F32, mul(rn(), cD())), in("norm_in", F32, mul(rn(), cD())), in("norm_w", F32, cD()),
			in("norm_rstd", F32, rn()), out("d_norm_in", F32, mul(rn(), cD())), scalar("n", I64)},
		Grid: []Dim{dim("t", rn())},
		Body: []Stmt{
			local("r", ld("norm_rstd", t)),
			local("dot", fc(0)),
			vloop("c", ic(0), cD(), set("dot", add(v("dot"), mul(dyw, x)))),
			local("coef", div(mul3(v("r"), mul(v("r"), v("r")), v("dot")), tof(cD()))),
			vloop("c", ic(0), cD(), store("d_norm_in", at2(t, cD(), c), sub(mul(v("r"), dyw), mul(x, v("coef")))))},
		Ref: sh.refRMSNormBwd}
}

func (sh Shape) rmsnormWGrad() *Kernel {
	c := v("c")
	return &Kernel{Name: "rmsnorm_w_grad", Doc: "RMSNorm weight gradient, summed over rows.",
		Consts: sh.denseConsts(),
		Params: []Param{in("d_norm_out", F32, mul(rn(), cD())), in("norm_in", F32, mul(rn(), cD())),
			in("norm_rstd", F32, rn()), out("d_norm_w", F32, cD()), scalar("n", I64)},
		Grid: []Dim{dim("c", cD())},
		Body: []Stmt{
			local("acc", fc(0)),
			vloop("t", ic(0), rn(), set("acc", add(v("acc"),
				mul3(ld("d_norm_out", at2(v("t"), cD(), c)), ld("norm_in", at2(v("t"), cD(), c)), ld("norm_rstd", v("t")))))),
			store("d_norm_w", c, v("acc"))},
		Ref: sh.refRMSNormWGrad}
}

// rotary rotates the pairs (i, i+half) of every head by the position's angle
// (GPT-NeoX layout); the backward pass is the rotation by the opposite angle, so both are
// this kernel with the sine's sign flipped. cos/sin tables are inputs: no device sin/cos.
func (sh Shape) rotary(name string, sign float32, src, dst string, ref func(Env) error) *Kernel {
	t, hd := v("t"), v("head")
	base := at2(at2(t, v("nh"), hd), v("hd"), ic(0))
	tab := at2(ld("pos", t), v("half"), v("i"))
	x1 := ld(src, add(base, v("i")))
	x2 := ld(src, add3(base, v("i"), v("half")))
	return &Kernel{Name: name, Doc: "Rotary position embedding of every head.", Consts: sh.denseConsts(),
		Params: []Param{in(src, F32, mul3(rn(), v("nh"), v("hd"))), in("pos", I32, rn()),
			in("rope_cos", F32, mul(v("seq"), v("half"))), in("rope_sin", F32, mul(v("seq"), v("half"))),
			out(dst, F32, mul3(rn(), v("nh"), v("hd"))), scalar("n", I64), scalar("seq", I64)},
		Grid: []Dim{dim("t", rn()), dim("head", v("nh"))},
		Body: []Stmt{vloop("i", ic(0), v("half"),
			local("co", ld("rope_cos", tab)),
			local("si", mul(fc(sign), ld("rope_sin", tab))),
			local("a", x1), local("b", x2),
			store(dst, add(base, v("i")), sub(mul(v("a"), v("co")), mul(v("b"), v("si")))),
			store(dst, add3(base, v("i"), v("half")), add(mul(v("b"), v("co")), mul(v("a"), v("si")))))},
		Ref: ref}
}

// attnSoftmaxFwd is the causal softmax of one score row (query position = row % seq).
// HunYuan's stochastic attention-weight sharing: when reuse is set the layer takes the
// probabilities of the layer below instead of computing its own.
func (sh Shape) attnSoftmaxFwd() *Kernel {
	row := v("row")
	at := func(j Expr) Expr { return at2(row, v("seq"), j) }
	score := mul(ld("att_scores", at(v("j"))), v("scale"))
	return &Kernel{Name: "attn_softmax_fwd", Doc: "Causal attention softmax, or reuse of the shared weights.",
		Consts: sh.denseConsts(),
		Params: []Param{in("att_scores", F32, mul(v("rows"), v("seq"))), in("att_prev", F32, mul(v("rows"), v("seq"))),
			inout("att_probs", F32, mul(v("rows"), v("seq"))), scalar("rows", I64), scalar("seq", I64), scalar("reuse", I64)},
		Grid: []Dim{dim("row", v("rows"))},
		Body: []Stmt{iff(eq(v("reuse"), ic(0)), []Stmt{
			local("q", add(rem(row, v("seq")), ic(1))),
			local("mx", fc(negHuge)),
			vloop("j", ic(0), v("q"), set("mx", fmax(v("mx"), score))),
			local("sum", fc(0)),
			vloop("j", ic(0), v("q"),
				local("p", exp(sub(score, v("mx")))),
				store("att_probs", at(v("j")), v("p")),
				set("sum", add(v("sum"), v("p")))),
			local("inv", div(fc(1), v("sum"))),
			vloop("j", ic(0), v("q"), store("att_probs", at(v("j")), mul(ld("att_probs", at(v("j"))), v("inv")))),
			vloop("j", v("q"), v("seq"), store("att_probs", at(v("j")), fc(0))),
		}, vloop("j", ic(0), v("seq"), store("att_probs", at(v("j")), ld("att_prev", at(v("j"))))))},
		Ref: sh.refAttnSoftmaxFwd}
}

func (sh Shape) attnSoftmaxBwd() *Kernel {
	row := v("row")
	at := func(j Expr) Expr { return at2(row, v("seq"), j) }
	dp := ld("d_att_probs", at(v("j")))
	p := ld("att_probs", at(v("j")))
	return &Kernel{Name: "attn_softmax_bwd", Doc: "Backward of the attention softmax; with reuse the gradient goes to the shared weights.",
		Consts: sh.denseConsts(),
		Params: []Param{in("d_att_probs", F32, mul(v("rows"), v("seq"))), in("att_probs", F32, mul(v("rows"), v("seq"))),
			out("d_att_scores", F32, mul(v("rows"), v("seq"))), out("d_att_prev", F32, mul(v("rows"), v("seq"))),
			scalar("rows", I64), scalar("seq", I64), scalar("reuse", I64)},
		Grid: []Dim{dim("row", v("rows"))},
		Body: []Stmt{iff(eq(v("reuse"), ic(0)), []Stmt{
			local("dot", fc(0)),
			vloop("j", ic(0), v("seq"), set("dot", add(v("dot"), mul(dp, p)))),
			vloop("j", ic(0), v("seq"),
				store("d_att_scores", at(v("j")), mul3(v("scale"), p, sub(dp, v("dot")))),
				store("d_att_prev", at(v("j")), fc(0))),
		}, vloop("j", ic(0), v("seq"),
			store("d_att_scores", at(v("j")), fc(0)),
			store("d_att_prev", at(v("j")), dp)))},
		Ref: sh.refAttnSoftmaxBwd}
}

func (sh Shape) xentFwd() *Kernel {
	t := v("t")
	l := ld("ce_logits", at2(t, cV(), v("j")))
	return &Kernel{Name: "xent_fwd", Doc: "Cross-entropy of each token's logits against its target.", Consts: sh.denseConsts(),
		Params: []Param{in("ce_logits", F32, mul(rn(), cV())), in("targets", I32, rn()), out("ce_loss", F32, rn()),
			out("ce_lse", F32, rn()), scalar("n", I64)},
		Grid: []Dim{dim("t", rn())},
		Body: []Stmt{
			local("mx", fc(negHuge)),
			vloop("j", ic(0), cV(), set("mx", fmax(v("mx"), l))),
			local("sum", fc(0)),
			vloop("j", ic(0), cV(), set("sum", add(v("sum"), exp(sub(l, v("mx")))))),
			local("lse", add(v("mx"), log(v("sum")))),
			store("ce_lse", t, v("lse")),
			store("ce_loss", t, sub(v("lse"), ld("ce_logits", at2(t, cV(), ld("targets", t)))))},
		Ref: sh.refXentFwd}
}

func (sh Shape) xentBwd() *Kernel {
	t, j := v("t"), v("j")
	return &Kernel{Name: "xent_bwd", Doc: "Cross-entropy backward: (softmax - onehot) * scale.", Consts: sh.denseConsts(),
		Params: []Param{in("ce_logits", F32, mul(rn(), cV())), in("targets", I32, rn()), in("ce_lse", F32, rn()),
			out("d_ce_logits", F32, mul(rn(), cV())), scalar("n", I64), scalar("ce_scale", F32)},
		Grid: []Dim{dim("t", rn())},
		Body: []Stmt{
			local("lse", ld("ce_lse", t)),
			local("tg", ld("targets", t)),
			vloop("j", ic(0), cV(), store("d_ce_logits", at2(t, cV(), j), mul(v("ce_scale"),
				sub(exp(sub(ld("ce_logits", at2(t, cV(), j)), v("lse"))), sel(eq(j, v("tg")), fc(1), fc(0))))))},
		Ref: sh.refXentBwd}
}

// adamw is one decoupled-weight-decay Adam step per element; the bias corrections
// 1-beta^step are computed by the host once per step (bc1, bc2).
func (sh Shape) adamw() *Kernel {
	i := v("i")
	return &Kernel{Name: "adamw", Doc: "AdamW update of one parameter tensor.",
		Params: []Param{inout("param", F32, v("numel")), in("grad", F32, v("numel")), inout("adam_m", F32, v("numel")),
			inout("adam_v", F32, v("numel")), scalar("numel", I64), scalar("lr", F32), scalar("beta1", F32),
			scalar("beta2", F32), scalar("eps", F32), scalar("wd", F32), scalar("bc1", F32), scalar("bc2", F32)},
		Grid: []Dim{dim("i", v("numel"))},
		Body: []Stmt{
			local("g", ld("grad", i)),
			local("m", add(mul(v("beta1"), ld("adam_m", i)), mul(sub(fc(1), v("beta1")), v("g")))),
			local("vv", add(mul(v("beta2"), ld("adam_v", i)), mul3(sub(fc(1), v("beta2")), v("g"), v("g")))),
			store("adam_m", i, v("m")),
			store("adam_v", i, v("vv")),
			local("p", ld("param", i)),
			store("param", i, sub(v("p"), mul(v("lr"), add(div(div(v("m"), v("bc1")), add(sqrt(div(v("vv"), v("bc2"))), v("eps"))),
				mul(v("wd"), v("p"))))))},
		Ref: refAdamW}
}
