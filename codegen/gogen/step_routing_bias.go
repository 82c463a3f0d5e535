package gogen

import (
	"github.com/dave/jennifer/jen"

	"github.com/moec-dev/moec/compiler/step"
)

// routingBiasCall is the Go statement of an op of auxiliary-loss-free balancing
// (compiler/step's routing_bias.go: the route op with a selection bias, the step's expert
// loads, the bias's zero gradient and its update), and whether op is one: the same
// runtime/exec kernels the executor calls.
func routingBiasCall(op *step.Op) (jen.Code, bool) {
	in, out := op.In, op.Out
	acc := func(k int) jen.Code { return jen.Lit(op.Accumulates(k)) }
	switch {
	case op.Kind == step.OpRouter && len(in) > 1:
		return jen.Id("k").Dot("RouteBiased").Call(buf(in[1]), buf(in[0]), buf(out[0]), buf(out[1]), buf(out[2]), buf(out[3]), buf(out[4]), buf(out[5]), buf(out[6]), buf(out[7]),
			jen.Lit(op.Slots), jen.Lit(op.Packed), jen.Lit(op.Recomputed)), true
	case op.Kind == step.OpExpertLoad:
		return jen.Qual(pkgExec, "ExpertLoad").Call(buf(in[0]), buf(out[0]), acc(0)), true
	case op.Kind == step.OpRouterBiasBwd:
		return jen.Qual(pkgExec, "RouterBiasBwd").Call(buf(out[0]), acc(0)), true
	case op.Kind == step.OpRouterBiasUpdate:
		return jen.Qual(pkgExec, "RouterBiasUpdate").Call(buf(in[0]), buf(out[0]), jen.Lit(op.BiasAt), jen.Lit(op.BiasRate)), true
	}
	return nil, false
}
