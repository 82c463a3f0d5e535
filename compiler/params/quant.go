package params

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// Weight-only quantisation for serving (the language's `compress` block, runtime/compress):
// which matrices each choice covers and what they then weigh.

// The kinds of matrix a compress block chooses a scheme for.
const (
	QuantExperts = "experts" // routed experts' w1, w2, w3
	QuantDense   = "dense"   // attention projections, dense FFNs, shared experts
	QuantEmbed   = "embed"   // the token embedding (and a tied head)
	QuantHead    = "head"    // an untied lm_head
)

// QuantKind is the kind of matrix a parameter is for quantisation, "" for one that stays
// float32 whatever is chosen: routers and router tables, norms, biases, positions,
// talking-heads and sink parameters, the shared expert gate.
func QuantKind(id ID) string {
	if id.Bias {
		return ""
	}
	switch id.Role {
	case RoleExpertIn, RoleExpertUp, RoleExpertDown:
		return QuantExperts
	case RoleQ, RoleK, RoleV, RoleO, RoleFFNIn, RoleFFNUp, RoleFFNDown, RoleSharedIn, RoleSharedUp, RoleSharedDown:
		return QuantDense
	case RoleEmbed:
		return QuantEmbed
	case RoleHead:
		return QuantHead
	}
	return ""
}

// QuantScheme is how a kind of matrix is stored: Bits 0 (float32), 8 or 4; Group the
// input columns per scale (0: one scale per output channel).
type QuantScheme struct {
	Bits, Group int
}

// QuantBlock is the column block int4 values are packed in and int8 activations are
// scaled in (runtime/quant.Block).
const QuantBlock = 32

// Fits says why s cannot quantise a matrix of input width in, or nil when it can: int4
// needs groups that are a multiple of 32 (per output channel, a width that is), and a
// group must divide the width.
func (s QuantScheme) Fits(in int) error {
	switch {
	case s.Bits == 0:
		return nil
	case s.Group == 0 && s.Bits == 4 && in%QuantBlock != 0:
		return fmt.Errorf("int4 packs blocks of %d columns and the width %d is not a multiple of %d", QuantBlock, in, QuantBlock)
	case s.Group == 0:
		return nil
	case s.Group < 0 || s.Group%QuantBlock != 0:
		return fmt.Errorf("a group must be a positive multiple of %d", QuantBlock)
	case in%s.Group != 0:
		return fmt.Errorf("group %d does not divide the width %d", s.Group, in)
	}
	return nil
}

// Bytes is what a [out, in] matrix weighs under s: 4 bytes a value in float32; else the
// values (a byte, or half of one) and a float32 scale per output channel or group.
func (s QuantScheme) Bytes(out, in int) int64 {
	if s.Bits == 0 {
		return 4 * int64(out) * int64(in)
	}
	groups := 1
	if s.Group > 0 {
		groups = in / s.Group
	}
	return int64(out)*int64(in)*int64(s.Bits)/8 + 4*int64(out)*int64(groups)
}

// WeightBytes is what the parameters of layout weigh with schemes chosen per kind (a kind
// missing from schemes stays float32).
func WeightBytes(layout []Param, schemes map[string]QuantScheme) int64 {
	return int64(Weigh(layout, schemes, 4).Bytes())
}

// Weights is what a layout weighs, the routed experts' matrices apart from every other
// parameter.
type Weights struct {
	ExpertBytes, ExpertParams float64
	OtherBytes, OtherParams   float64
}

// Bytes is the whole layout's weight.
func (w Weights) Bytes() float64 { return w.ExpertBytes + w.OtherBytes }

// Weigh weighs layout with schemes chosen per kind of matrix: a quantised matrix at its
// scheme's bytes (values and float32 scales), every other parameter (a kind left out of
// schemes, vectors, routers) at floatBytes a value.
func Weigh(layout []Param, schemes map[string]QuantScheme, floatBytes float64) Weights {
	var w Weights
	for _, p := range layout {
		kind := QuantKind(p.ID)
		n := float64(p.Elements())
		bytes := n * floatBytes
		if s, ok := schemes[kind]; ok && kind != "" && len(p.Shape) == 2 && s.Bits != 0 {
			bytes = float64(s.Bytes(p.Shape[0], p.Shape[1]))
		}
		if kind == QuantExperts {
			w.ExpertBytes, w.ExpertParams = w.ExpertBytes+bytes, w.ExpertParams+n
		} else {
			w.OtherBytes, w.OtherParams = w.OtherBytes+bytes, w.OtherParams+n
		}
	}
	return w
}

// Schemes is a compress block's scheme per kind of matrix; a kind it leaves in float32 is
// absent.
func Schemes(cp *program.Compress) map[string]QuantScheme {
	out := map[string]QuantScheme{}
	for kind, scheme := range map[string]string{QuantExperts: cp.Experts, QuantDense: cp.Dense, QuantEmbed: cp.Embed, QuantHead: cp.Head} {
		switch scheme {
		case "int8":
			out[kind] = QuantScheme{Bits: 8}
		case "int4":
			out[kind] = QuantScheme{Bits: 4, Group: cp.Group}
		}
	}
	return out
}
