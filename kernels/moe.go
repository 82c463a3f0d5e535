package kernels

import "github.com/moec-dev/moec/compiler/program"

// The MoE kernels: router, routing index, permutation, grouped expert FFN, un-permutation,
// forward and backward. Buffer names are shared (see Env): permuted rows are "slots",
// n*K of them for n tokens (dropless).
//
// Shape constants: D d_model, E experts, K top_k, H expert hidden, R router input width,
// V padded vocabulary. Runtime scalar: n tokens.

const negHuge = -3.0e38 // below any finite score, above -inf so max() never sees NaN

func (sh Shape) moeConsts() []ShapeConst {
	return []ShapeConst{ci("d", sh.DModel), ci("e", sh.Experts), ci("k", sh.TopK), ci("h", sh.Hidden),
		ci("r", sh.RouterDim), ci("v", sh.Vocab)}
}

// Names of the shape constants and the token count, as fresh nodes (check annotates
// nodes in place, so descriptions never share them across kernels).
func cD() Expr    { return v("d") }
func cE() Expr    { return v("e") }
func cK() Expr    { return v("k") }
func cH() Expr    { return v("h") }
func cR() Expr    { return v("r") }
func cV() Expr    { return v("v") }
func rn() Expr    { return v("n") }
func slots() Expr { return mul(v("n"), v("k")) }

// routerIn returns the router input params and the element (t, c) it reads.
func (sh Shape) routerIn() ([]Param, func(t, c Expr) Expr) {
	if sh.TokenRoute {
		return []Param{in("ids", I32, rn()), in("router_table", F32, mul(cV(), cR()))},
			func(t, c Expr) Expr { return ld("router_table", at2(ld("ids", t), cR(), c)) }
	}
	return []Param{in("x", F32, mul(rn(), cR()))}, func(t, c Expr) Expr { return ld("x", at2(t, cR(), c)) }
}

// routerLogits is the router projection as a (one-group) contraction: logits[t, ex] =
// <input row of t, router_w[ex]> (+ bias), written into router_probs for router_fwd to
// score in place. As a contraction it is a tiled GEMM on the GPU.
func (sh Shape) routerLogits() *Kernel {
	params, input := sh.routerIn()
	params = append(params, in("router_w", F32, mul(cE(), cR())))
	logit := Expr(v("acc"))
	if sh.RouterBias {
		params = append(params, in("router_b", F32, cE()))
		logit = add(v("acc"), ld("router_b", v("ex")))
	}
	params = append(params, out("router_probs", F32, mul(rn(), cE())), scalar("n", I64))
	return contract(&Kernel{Name: "router_logits", Doc: "Router projection: one logit per token and expert.",
		Consts: sh.moeConsts(), Params: params, Ref: sh.refRouterLogits},
		&Contraction{Row: "t", Col: "ex", Depth: "c", Group: "rg", Rows: rn(), Cols: cE(), DepthN: cR(), GroupOf: ic(0),
			Accs:     []string{"acc"},
			Terms:    []Term{{Acc: "acc", A: input(v("t"), v("c")), B: ld("router_w", at2(v("ex"), cR(), v("c")))}},
			Epilogue: []Stmt{store("router_probs", at2(v("t"), cE(), v("ex")), logit)}})
}

// routerFwd scores every expert of one token from its logits (in place in
// router_probs), then picks the top k by K passes of argmax that each take the best
// expert ranked strictly after the previous pick (score descending, index ascending).
// The passes keep only scalars live, so the GPU kernel needs no local-memory array for
// the selection.
func (sh Shape) routerFwd() *Kernel {
	params := []Param{inout("router_probs", F32, mul(rn(), cE())), out("expert_idx", I32, slots()),
		inout("gate", F32, slots()), scalar("n", I64)}
	t := v("t")
	prob := ld("router_probs", at2(t, cE(), v("ex")))
	var body []Stmt
	if sh.Score == program.Sigmoid {
		body = append(body, vloop("ex", ic(0), cE(), store("router_probs", at2(t, cE(), v("ex")), sigmoidE(prob))))
	} else {
		body = append(body,
			local("mx", fc(negHuge)),
			vloop("ex", ic(0), cE(), set("mx", fmax(v("mx"), prob))),
			local("sum", fc(0)),
			vloop("ex", ic(0), cE(),
				local("p", exp(sub(prob, v("mx")))),
				store("router_probs", at2(t, cE(), v("ex")), v("p")),
				set("sum", add(v("sum"), v("p")))),
			local("inv", div(fc(1), v("sum"))),
			vloop("ex", ic(0), cE(), store("router_probs", at2(t, cE(), v("ex")), mul(prob, v("inv")))))
	}
	body = append(body,
		local("prev", fc(3.0e38)), local("previ", ic(-1)), local("gsum", fc(0)),
		loop("j", ic(0), cK(),
			local("best", fc(-1)), local("bi", ic(0)),
			loop("ex", ic(0), cE(),
				local("p", prob),
				iff(and(or(lt(v("p"), v("prev")), and(eq(v("p"), v("prev")), gt(v("ex"), v("previ")))), gt(v("p"), v("best"))),
					[]Stmt{set("best", v("p")), set("bi", v("ex"))})),
			store("expert_idx", at2(t, cK(), v("j")), v("bi")),
			store("gate", at2(t, cK(), v("j")), v("best")),
			set("gsum", add(v("gsum"), v("best"))),
			set("prev", v("best")), set("previ", v("bi"))))
	if sh.Normalize {
		body = append(body, local("ginv", div(fc(1), v("gsum"))),
			loop("j", ic(0), cK(), store("gate", at2(t, cK(), v("j")), mul(ld("gate", at2(t, cK(), v("j"))), v("ginv")))))
	}
	return &Kernel{Name: "router_fwd", Doc: "Router scores (softmax or sigmoid of the logits), top-k experts and gates per token.",
		Consts: sh.moeConsts(), Params: params, Grid: []Dim{dim("t", rn())}, Body: body, Ref: sh.refRouterFwd}
}

// routeIndex gives every (token, choice) a slot in expert order. One point per expert
// scans all assignments, so the order inside an expert is token order: deterministic,
// with no atomics and no separate scan kernel.
func (sh Shape) routeIndex() *Kernel {
	a := v("a")
	x := ld("expert_idx", a)
	return &Kernel{Name: "route_index", Doc: "Per-expert counts and offsets; slot of every (token, choice).",
		Consts: sh.moeConsts(),
		Params: []Param{in("expert_idx", I32, slots()), out("expert_count", I32, cE()), out("expert_offset", I32, cE()),
			out("slot_token", I32, slots()), out("slot_expert", I32, slots()), out("slot_of", I32, slots()), scalar("n", I64)},
		Grid: []Dim{dim("ex", cE())},
		Body: []Stmt{
			local("off", ic(0)), local("cnt", ic(0)),
			vloop("a", ic(0), slots(),
				set("off", add(v("off"), sel(lt(x, v("ex")), ic(1), ic(0)))),
				set("cnt", add(v("cnt"), sel(eq(x, v("ex")), ic(1), ic(0))))),
			store("expert_count", v("ex"), v("cnt")),
			store("expert_offset", v("ex"), v("off")),
			local("c", ic(0)),
			loop("a", ic(0), slots(),
				iff(eq(x, v("ex")), []Stmt{
					local("s", add(v("off"), v("c"))),
					store("slot_token", v("s"), div(a, cK())),
					store("slot_expert", v("s"), v("ex")),
					store("slot_of", a, v("s")),
					set("c", add(v("c"), ic(1)))})),
		}, Ref: sh.refRouteIndex}
}

// gatherRows is out[i] = sum over j<k of weight(i,j) * src[row(i,j)] for one destination
// row i of width D: the permutation (k=1, weight 1), the weighted un-permutation and both
// of their backward passes are this one shape of kernel.
func (sh Shape) gatherRows(name, doc, src, dst string, srcRows, dstRows Expr, k Expr, row func(i, j Expr) Expr,
	weight func(i, j Expr) Expr, extra []Param, ref func(Env) error) *Kernel {
	i := v("i")
	term := ld(src, at2(row(i, v("j")), cD(), v("c")))
	if weight != nil {
		term = mul(weight(i, v("j")), term)
	}
	params := append([]Param{in(src, F32, mul(srcRows, cD())), out(dst, F32, mul(dstRows, cD()))}, extra...)
	params = append(params, scalar("n", I64))
	return &Kernel{Name: name, Doc: doc, Consts: sh.moeConsts(), Params: params,
		Grid: []Dim{dim("i", dstRows)},
		Body: []Stmt{vloop("c", ic(0), cD(),
			local("acc", fc(0)),
			loop("j", ic(0), k, set("acc", add(v("acc"), term))),
			store(dst, at2(i, cD(), v("c")), v("acc")))},
		Ref: ref}
}

func (sh Shape) permuteFwd() *Kernel {
	return sh.gatherRows("permute_fwd", "Copy token rows into expert order.", "x", "xp", rn(), slots(), ic(1),
		func(i, _ Expr) Expr { return ld("slot_token", i) }, nil,
		[]Param{in("slot_token", I32, slots())}, sh.refPermuteFwd)
}

func (sh Shape) unpermuteFwd() *Kernel {
	return sh.gatherRows("unpermute_fwd", "Gate-weighted sum of each token's expert outputs.", "ey", "moe_out", slots(), rn(), cK(),
		func(i, j Expr) Expr { return ld("slot_of", at2(i, cK(), j)) },
		func(i, j Expr) Expr { return ld("gate", at2(i, cK(), j)) },
		[]Param{in("slot_of", I32, slots()), in("gate", F32, slots())}, sh.refUnpermuteFwd)
}

func (sh Shape) permuteBwd() *Kernel {
	return sh.gatherRows("permute_bwd", "Sum the gradients of a token's permuted copies.", "d_xp", "d_x", slots(), rn(), cK(),
		func(i, j Expr) Expr { return ld("slot_of", at2(i, cK(), j)) }, nil,
		[]Param{in("slot_of", I32, slots())}, sh.refPermuteBwd)
}

// unpermuteBwd: for each token and choice, d_ey[slot] = gate * d_out and
// d_gate = <d_out, ey[slot]>. Each slot belongs to exactly one (token, choice).
func (sh Shape) unpermuteBwd() *Kernel {
	t := v("t")
	s := v("s")
	dy := ld("d_moe_out", at2(t, cD(), v("c")))
	return &Kernel{Name: "unpermute_bwd", Doc: "Backward of the weighted un-permutation: expert-output and gate gradients.",
		Consts: sh.moeConsts(),
		Params: []Param{in("d_moe_out", F32, mul(rn(), cD())), in("ey", F32, mul(slots(), cD())), in("gate", F32, slots()),
			in("slot_of", I32, slots()), out("d_ey", F32, mul(slots(), cD())), out("d_gate", F32, slots()), scalar("n", I64)},
		Grid: []Dim{dim("t", rn())},
		Body: []Stmt{loop("j", ic(0), cK(),
			local("s", ld("slot_of", at2(t, cK(), v("j")))),
			local("g", ld("gate", at2(t, cK(), v("j")))),
			local("dg", fc(0)),
			vloop("c", ic(0), cD(),
				store("d_ey", at2(s, cD(), v("c")), mul(v("g"), dy)),
				set("dg", add(v("dg"), mul(dy, ld("ey", at2(s, cD(), v("c"))))))),
			store("d_gate", at2(t, cK(), v("j")), v("dg")))},
		Ref: sh.refUnpermuteBwd}
}

func (sh Shape) gated() bool { return sh.Activation.Gated() }

// groupedGEMM is the Contraction of the expert kernels: rows are slots s (expert
// ex = slot_expert[s]), the depth variable is named depth and the columns col.
func groupedGEMM(col, depth string, cols, depthN Expr, accs []string, terms []Term, epilogue []Stmt) *Contraction {
	return &Contraction{Row: "s", Col: col, Depth: depth, Group: "ex", Rows: slots(), Cols: cols, DepthN: depthN,
		GroupOf: ld("slot_expert", v("s")), Accs: accs, Terms: terms, Epilogue: epilogue}
}

// expertUpFwd is the first grouped GEMM: row s of the permuted tokens times its expert's
// up (and gate) projection, with the activation fused in the epilogue. ea/eg keep the
// pre-activations for the backward pass.
func (sh Shape) expertUpFwd() *Kernel {
	s, hh := v("s"), v("hh")
	xp := func() Expr { return ld("xp", at2(v("s"), cD(), v("c"))) }
	wrow := func() Expr { return at2(at2(v("ex"), cH(), v("hh")), cD(), v("c")) }
	params := []Param{in("xp", F32, mul(slots(), cD())), in("slot_expert", I32, slots()), in("w1", F32, mul3(cE(), cH(), cD()))}
	accs := []string{"acc"}
	terms := []Term{{Acc: "acc", A: xp(), B: ld("w1", wrow())}}
	epi := []Stmt{store("ea", at2(s, cH(), hh), v("acc"))}
	if sh.gated() {
		params = append(params, in("wg", F32, mul3(cE(), cH(), cD())), out("eg", F32, mul(slots(), cH())))
		accs = append(accs, "g")
		terms = append(terms, Term{Acc: "g", A: xp(), B: ld("wg", wrow())})
		epi = append(epi,
			store("eg", at2(s, cH(), hh), v("g")),
			store("eh", at2(s, cH(), hh), mul(actE(sh.Activation, v("g")), v("acc"))))
	} else {
		epi = append(epi, store("eh", at2(s, cH(), hh), actE(sh.Activation, v("acc"))))
	}
	params = append(params, out("ea", F32, mul(slots(), cH())), out("eh", F32, mul(slots(), cH())), scalar("n", I64))
	return contract(&Kernel{Name: "expert_up_fwd", Doc: "Grouped GEMM: permuted rows times their expert's up projection, activation fused.",
		Consts: sh.moeConsts(), Params: params, Ref: sh.refExpertUpFwd},
		groupedGEMM("hh", "c", cH(), cD(), accs, terms, epi))
}

func (sh Shape) expertDownFwd() *Kernel {
	return contract(&Kernel{Name: "expert_down_fwd", Doc: "Grouped GEMM: activations times their expert's down projection.",
		Consts: sh.moeConsts(),
		Params: []Param{in("eh", F32, mul(slots(), cH())), in("slot_expert", I32, slots()), in("w2", F32, mul3(cE(), cD(), cH())),
			out("ey", F32, mul(slots(), cD())), scalar("n", I64)},
		Ref: sh.refExpertDownFwd},
		groupedGEMM("m", "hh", cD(), cH(), []string{"acc"},
			[]Term{{Acc: "acc", A: ld("eh", at2(v("s"), cH(), v("hh"))), B: ld("w2", at2(at2(v("ex"), cD(), v("m")), cH(), v("hh")))}},
			[]Stmt{store("ey", at2(v("s"), cD(), v("m")), v("acc"))}))
}

// expertDownBwd computes d_eh = d_ey · w2[e] and pushes it through the activation.
func (sh Shape) expertDownBwd() *Kernel {
	s, hh := v("s"), v("hh")
	params := []Param{in("d_ey", F32, mul(slots(), cD())), in("slot_expert", I32, slots()), in("w2", F32, mul3(cE(), cD(), cH())),
		in("ea", F32, mul(slots(), cH()))}
	epi := []Stmt{local("a", ld("ea", at2(s, cH(), hh)))}
	if sh.gated() {
		params = append(params, in("eg", F32, mul(slots(), cH())), out("d_eg", F32, mul(slots(), cH())))
		epi = append(epi,
			local("g", ld("eg", at2(s, cH(), hh))),
			store("d_ea", at2(s, cH(), hh), mul(v("dh"), actE(sh.Activation, v("g")))),
			store("d_eg", at2(s, cH(), hh), mul3(v("dh"), v("a"), dactE(sh.Activation, v("g")))))
	} else {
		epi = append(epi, store("d_ea", at2(s, cH(), hh), mul(v("dh"), dactE(sh.Activation, v("a")))))
	}
	params = append(params, out("d_ea", F32, mul(slots(), cH())), scalar("n", I64))
	return contract(&Kernel{Name: "expert_down_bwd", Doc: "Backward of the down projection and the activation.",
		Consts: sh.moeConsts(), Params: params, Ref: sh.refExpertDownBwd},
		groupedGEMM("hh", "m", cH(), cD(), []string{"dh"},
			[]Term{{Acc: "dh", A: ld("d_ey", at2(v("s"), cD(), v("m"))), B: ld("w2", at2(at2(v("ex"), cD(), v("m")), cH(), v("hh")))}},
			epi))
}

// expertUpBwd: d_xp = d_ea · w1[e] (+ d_eg · wg[e]).
func (sh Shape) expertUpBwd() *Kernel {
	wcol := func() Expr { return at2(at2(v("ex"), cH(), v("hh")), cD(), v("c")) }
	params := []Param{in("d_ea", F32, mul(slots(), cH())), in("slot_expert", I32, slots()), in("w1", F32, mul3(cE(), cH(), cD()))}
	terms := []Term{{Acc: "acc", A: ld("d_ea", at2(v("s"), cH(), v("hh"))), B: ld("w1", wcol())}}
	if sh.gated() {
		params = append(params, in("d_eg", F32, mul(slots(), cH())), in("wg", F32, mul3(cE(), cH(), cD())))
		terms = append(terms, Term{Acc: "acc", A: ld("d_eg", at2(v("s"), cH(), v("hh"))), B: ld("wg", wcol())})
	}
	params = append(params, out("d_xp", F32, mul(slots(), cD())), scalar("n", I64))
	return contract(&Kernel{Name: "expert_up_bwd", Doc: "Backward of the up projection with respect to the permuted rows.",
		Consts: sh.moeConsts(), Params: params, Ref: sh.refExpertUpBwd},
		groupedGEMM("c", "hh", cD(), cH(), []string{"acc"}, terms, []Stmt{store("d_xp", at2(v("s"), cD(), v("c")), v("acc"))}))
}

// expertWeightGrad is dW[e, a, b] = sum over the slots() of expert e of dy[s, a] * x[s, b]:
// the weight gradients of both projections. Each expert's slots() are contiguous
// (route_index), so the sum runs over [offset, offset+count).
func (sh Shape) expertWeightGrad(name, dw, dy, x string, rowsA, rowsB Expr, ref func(Env) error) *Kernel {
	off := func() Expr { return ld("expert_offset", v("ex")) }
	return contract(&Kernel{Name: name, Doc: "Expert weight gradient, summed over the expert's slots in slot order.",
		Consts: sh.moeConsts(),
		Params: []Param{in(dy, F32, mul(slots(), rowsA)), in(x, F32, mul(slots(), rowsB)), in("expert_offset", I32, cE()),
			in("expert_count", I32, cE()), out(dw, F32, mul3(cE(), rowsA, rowsB)), scalar("n", I64)},
		Ref: ref},
		&Contraction{Batch: "ex", Batches: cE(), Row: "ra", Col: "rb", Depth: "s", Rows: rowsA, Cols: rowsB,
			DepthLo: off(), DepthHi: add(off(), ld("expert_count", v("ex"))),
			Accs:     []string{"acc"},
			Terms:    []Term{{Acc: "acc", A: ld(dy, at2(v("s"), rowsA, v("ra"))), B: ld(x, at2(v("s"), rowsB, v("rb")))}},
			Epilogue: []Stmt{store(dw, at2(at2(v("ex"), rowsA, v("ra")), rowsB, v("rb")), v("acc"))}})
}

// routerBwd turns gate gradients into router-logit gradients through the (optional)
// renormalisation and the score function. Unselected experts get gradient only through
// the softmax denominator.
func (sh Shape) routerBwd() *Kernel {
	t := v("t")
	pj := ld("router_probs", at2(t, cE(), v("ej")))
	body := []Stmt{
		local("ssum", fc(0)), local("gd", fc(0)),
		loop("j", ic(0), cK(),
			set("ssum", add(v("ssum"), ld("router_probs", at2(t, cE(), ld("expert_idx", at2(t, cK(), v("j"))))))),
			set("gd", add(v("gd"), mul(ld("d_gate", at2(t, cK(), v("j"))), ld("gate", at2(t, cK(), v("j"))))))),
	}
	// dp_j: gradient with respect to the selected expert's score.
	dpj := ld("d_gate", at2(t, cK(), v("j")))
	if sh.Normalize {
		dpj = div(sub(dpj, v("gd")), v("ssum"))
	}
	body = append(body,
		local("dot", fc(0)),
		loop("j", ic(0), cK(),
			local("ej", ld("expert_idx", at2(t, cK(), v("j")))),
			set("dot", add(v("dot"), mul(dpj, pj)))))
	if sh.Score == program.Sigmoid {
		body = append(body,
			vloop("ex", ic(0), cE(), store("d_router_logits", at2(t, cE(), v("ex")), fc(0))),
			loop("j", ic(0), cK(),
				local("ej", ld("expert_idx", at2(t, cK(), v("j")))),
				store("d_router_logits", at2(t, cE(), v("ej")), mul3(dpj, pj, sub(fc(1), pj)))))
	} else {
		body = append(body,
			vloop("ex", ic(0), cE(), store("d_router_logits", at2(t, cE(), v("ex")), neg(mul(ld("router_probs", at2(t, cE(), v("ex"))), v("dot"))))),
			loop("j", ic(0), cK(),
				local("ej", ld("expert_idx", at2(t, cK(), v("j")))),
				store("d_router_logits", at2(t, cE(), v("ej")), mul(pj, sub(dpj, v("dot"))))))
	}
	return &Kernel{Name: "router_bwd", Doc: "Backward of score function, top-k gates and renormalisation.",
		Consts: sh.moeConsts(),
		Params: []Param{in("d_gate", F32, slots()), in("gate", F32, slots()), in("expert_idx", I32, slots()),
			in("router_probs", F32, mul(rn(), cE())), out("d_router_logits", F32, mul(rn(), cE())), scalar("n", I64)},
		Grid: []Dim{dim("t", rn())}, Body: body, Ref: sh.refRouterBwd}
}

// routerWGrad: d_router_w[e, c] = sum_t d_logits[t, e] * input[t, c] (and the bias),
// a contraction over tokens (tiled on the GPU).
func (sh Shape) routerWGrad() *Kernel {
	params, input := sh.routerIn()
	params = append(params, in("d_router_logits", F32, mul(rn(), cE())), out("d_router_w", F32, mul(cE(), cR())))
	epi := []Stmt{store("d_router_w", at2(v("ex"), cR(), v("c")), v("acc"))}
	if sh.RouterBias {
		params = append(params, out("d_router_b", F32, cE()))
		epi = append(epi, iff(eq(v("c"), ic(0)), []Stmt{
			local("bsum", fc(0)),
			vloop("tb", ic(0), rn(), set("bsum", add(v("bsum"), ld("d_router_logits", at2(v("tb"), cE(), v("ex")))))),
			store("d_router_b", v("ex"), v("bsum"))}))
	}
	params = append(params, scalar("n", I64))
	return contract(&Kernel{Name: "router_w_grad", Doc: "Router weight (and bias) gradient.", Consts: sh.moeConsts(),
		Params: params, Ref: sh.refRouterWGrad},
		&Contraction{Row: "ex", Col: "c", Depth: "t", Group: "rg", Rows: cE(), Cols: cR(), DepthN: rn(), GroupOf: ic(0),
			Accs:     []string{"acc"},
			Terms:    []Term{{Acc: "acc", A: ld("d_router_logits", at2(v("t"), cE(), v("ex"))), B: input(v("t"), v("c"))}},
			Epilogue: epi})
}

// routerInGrad: gradient of the router input row per token (hidden state, or the
// token-embedding row, which the caller scatters into the table).
func (sh Shape) routerInGrad() *Kernel {
	return contract(&Kernel{Name: "router_in_grad", Doc: "Gradient of the router's input row per token.", Consts: sh.moeConsts(),
		Params: []Param{in("d_router_logits", F32, mul(rn(), cE())), in("router_w", F32, mul(cE(), cR())),
			out("d_router_in", F32, mul(rn(), cR())), scalar("n", I64)},
		Ref: sh.refRouterInGrad},
		&Contraction{Row: "t", Col: "c", Depth: "ex", Group: "rg", Rows: rn(), Cols: cR(), DepthN: cE(), GroupOf: ic(0),
			Accs:     []string{"acc"},
			Terms:    []Term{{Acc: "acc", A: ld("d_router_logits", at2(v("t"), cE(), v("ex"))), B: ld("router_w", at2(v("ex"), cR(), v("c")))}},
			Epilogue: []Stmt{store("d_router_in", at2(v("t"), cR(), v("c")), v("acc"))}})
}
