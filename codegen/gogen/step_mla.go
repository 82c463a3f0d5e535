package gogen

import (
	"github.com/dave/jennifer/jen"

	"github.com/moec-dev/moec/compiler/step"
)

// mlaCall is the Go statement of an op of latent attention (compiler/step's mla.go), and
// whether op is one: the same runtime/exec kernels the executor calls.
func mlaCall(p *step.Program, op *step.Op) (jen.Code, bool) {
	in, out := op.In, op.Out
	acc := func(k int) jen.Code { return jen.Lit(op.Accumulates(k)) }
	rows := func(b int) jen.Code { return jen.Lit(p.Buffers[b].Shape[0]) }
	mask := jen.Qual(pkgStep, "AttnMask").Values(jen.Dict{jen.Id("Window"): jen.Lit(op.Mask.Window), jen.Id("Chunk"): jen.Lit(op.Mask.Chunk)})
	k := jen.Id("k")
	switch op.Kind {
	case step.OpLatentNorm:
		return jen.Qual(pkgExec, "LatentNorm").Call(buf(in[0]), buf(in[1]), buf(out[0]), buf(out[1])), true
	case step.OpMLASplit:
		return jen.Qual(pkgExec, "MLASplit").Call(buf(in[0]), buf(out[0]), buf(out[1]), rows(in[0])), true
	case step.OpMLASplitBwd:
		return jen.Qual(pkgExec, "MLASplitBwd").Call(buf(in[0]), buf(in[1]), buf(out[0]), rows(out[0]), acc(0)), true
	case step.OpMLAHeads:
		if len(in) > 3 {
			return nil, false // decoding positions: inference programs are not written out as Go
		}
		return k.Dot("MLAHeads").Call(buf(in[0]), buf(in[1]), buf(in[2]), jen.Nil(), buf(out[0]), buf(out[1]), buf(out[2])), true
	case step.OpMLAHeadsBwd:
		return k.Dot("MLAHeadsBwd").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), buf(out[1]), buf(out[2]), acc(0), acc(1), acc(2)), true
	case step.OpMLAAttention:
		return k.Dot("MLAAttention").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), buf(out[1]), mask), true
	case step.OpMLAAttnBwd:
		return k.Dot("MLAAttentionBwd").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(in[4]), buf(out[0]), buf(out[1]), buf(out[2]), mask, acc(0), acc(1), acc(2)), true
	}
	return nil, false
}
