package gogen

import (
	"github.com/dave/jennifer/jen"

	"github.com/moec-dev/moec/compiler/step"
)

// moeVariantCall is the Go statement of an op of the MoE variants (compiler/step's
// moe_variants.go: the clamped SwiGLU, gate_input's permute and combine, the shared
// expert gate), and whether op is one: the same runtime/exec kernels the executor calls.
func moeVariantCall(p *step.Program, op *step.Op) (jen.Code, bool) {
	in, out := op.In, op.Out
	shape := func(b int) []int { return p.Buffers[b].Shape }
	acc := func(k int) jen.Code { return jen.Lit(op.Accumulates(k)) }
	k := jen.Id("k")
	switch {
	case op.Kind == step.OpAct && op.SwigluLimit > 0:
		return jen.Qual(pkgExec, "ActClamped").Call(jen.Lit(op.SwigluLimit), jen.Lit(op.SwigluAlpha), buf(in[0]), buf(in[1]), buf(out[0]),
			jen.Lit(actExperts(shape(in[0]))), fill(in[0]), fill(out[0])), true
	case op.Kind == step.OpActBwd && op.SwigluLimit > 0:
		return jen.Qual(pkgExec, "ActClampedBwd").Call(jen.Lit(op.SwigluLimit), jen.Lit(op.SwigluAlpha), buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), buf(out[1]),
			acc(0), acc(1), jen.Lit(actExperts(shape(in[1]))), fill(in[0]), fill(in[1]), fill(out[0]), fill(out[1])), true
	case op.Kind == step.OpPermute && op.GateInput:
		C, D := dispatchDims(shape(out[0]))
		return k.Dot("PermuteGated").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(out[0]), jen.Lit(C), jen.Lit(D), fill(out[0])), true
	case op.Kind == step.OpPermuteBwd && op.GateInput:
		C, D := dispatchDims(shape(in[0]))
		return k.Dot("PermuteGatedBwd").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(in[4]), buf(out[0]), buf(out[1]), jen.Lit(C), jen.Lit(D), acc(0), acc(1)), true
	case op.Kind == step.OpCombine && op.GateInput:
		C, D := dispatchDims(shape(in[0]))
		return k.Dot("CombineUngated").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), jen.Lit(C), jen.Lit(D)), true
	case op.Kind == step.OpCombineBwd && op.GateInput:
		C, D := dispatchDims(shape(in[1]))
		return k.Dot("CombineUngatedBwd").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(out[0]), jen.Lit(C), jen.Lit(D), fill(in[1]), fill(out[0])), true
	case op.Kind == step.OpSigmoidGate:
		return jen.Qual(pkgExec, "SigmoidGate").Call(buf(in[0]), buf(in[1]), buf(out[0])), true
	case op.Kind == step.OpSigmoidGateBwd:
		return jen.Qual(pkgExec, "SigmoidGateBwd").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), buf(out[1]), acc(0), acc(1)), true
	}
	return nil, false
}
