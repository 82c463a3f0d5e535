package gogen

import (
	"fmt"
	"strings"

	"github.com/dave/jennifer/jen"

	"github.com/moec-dev/moec/compiler/step"
)

// distillLossCall is the Go statement of a distill_loss op: the fused loss, or under tp
// one of its four vocabulary-parallel passes (compiler/step's distillHead), the kernels
// the executor calls.
func distillLossCall(p *step.Program, op *step.Op) jen.Code {
	in, out := op.In, op.Out
	vl := p.Buffers[in[0]].Shape[1]
	first := p.Coord.TP * vl
	d := op.Distill
	dv := jen.Qual(pkgStep, "Distill").Values(jen.Dict{jen.Id("Temperature"): jen.Lit(d.Temperature), jen.Id("SoftWeight"): jen.Lit(d.SoftWeight),
		jen.Id("HardWeight"): jen.Lit(d.HardWeight)})
	k := jen.Id("k")
	switch {
	case op.Pass == step.LossMax:
		return jen.Qual(pkgExec, "DistillLossMax").Call(buf(in[0]), buf(in[1]), buf(out[0]), jen.Lit(vl))
	case op.Pass == step.LossSum:
		return jen.Qual(pkgExec, "DistillLossSum").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(out[0]), jen.Lit(vl), jen.Lit(first), dv)
	case op.Pass == step.LossCross:
		return jen.Qual(pkgExec, "DistillLossCross").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(out[0]), jen.Lit(vl), dv)
	case len(in) > 3:
		return k.Dot("DistillLossParallel").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(in[3]), buf(in[4]), buf(in[5]), buf(out[0]), bufOr(out, 1),
			jen.Lit(vl), jen.Lit(first), dv)
	}
	return k.Dot("DistillLoss").Call(buf(in[0]), buf(in[1]), buf(in[2]), buf(out[0]), bufOr(out, 1), jen.Lit(vl), dv)
}

// genTeacherLogits writes the teacher's forward on each micro-batch whose teacher_logits
// input the program reads, into that input, before the step's first op: under tp the
// rank's slice of the vocabulary (the teacher runs whole on every rank).
func genTeacherLogits(g *jen.Group, p *step.Program) {
	for i, b := range p.Buffers {
		if b.Kind != step.KindInput || b.Int || !strings.HasPrefix(b.Name, "teacher_logits@") || p.Memory.Lifetime[i][0] < 0 {
			continue
		}
		var mi int
		fmt.Sscan(strings.TrimPrefix(b.Name, "teacher_logits@"), &mi)
		vl := b.Shape[1]
		g.If(jen.Err().Op(":=").Id("r").Dot("teacher").Dot("Fill").Call(buf(i), jen.Id("micro").Index(jen.Lit(mi)), jen.Lit(vl), jen.Lit(p.Coord.TP*vl),
			jen.Qual(pkgExec, "Options").Values()), jen.Err().Op("!=").Nil()).Block(
			jen.Return(jen.Qual(pkgExec, "Stats").Values(), jen.Qual("fmt", "Errorf").Call(jen.Lit(fmt.Sprintf("micro-batch %d: %%w", mi)), jen.Err())))
	}
}
