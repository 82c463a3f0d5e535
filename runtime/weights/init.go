package weights

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/rng"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Init says how a tensor starts.
type Init uint8

const (
	Normal   Init = iota // normal(0, 0.02)
	Residual             // an output projection: normal(0, 0.02/√(2·layers)), as GPT-2 does
	Ones                 // a norm's scale
	Zeros                // biases, sink logits
	Identity             // talking-heads mixing: plain attention to start with
)

// InitOf is how parameter id starts.
func InitOf(id params.ID) Init {
	switch {
	case id.Bias:
		return Zeros
	case id.Role.Norm():
		return Ones
	}
	switch id.Role {
	case params.RoleO, params.RoleFFNDown, params.RoleExpertDown, params.RoleSharedDown:
		return Residual
	case params.RoleSinks, params.RoleRouterCorrection:
		return Zeros
	case params.RoleTalkingPre, params.RoleTalkingPost:
		return Identity
	}
	return Normal
}

// Fill writes a tensor's initial values into w (of shape, zeros on entry): a Normal or
// Residual tensor draws from the rng.PurposeInit stream keyed by its index in the model's
// parameter list (params.Walk), so a rank that holds only some tensors draws exactly the
// values the single-rank model draws for them; layers is the model's decoder layers.
func Fill[F ~float32 | ~float64](w []F, shape []int, kind Init, seed int64, index, layers int) {
	switch kind {
	case Ones:
		for i := range w {
			w[i] = 1
		}
	case Identity:
		n := shape[0]
		for i := 0; i < n; i++ {
			w[i*n+i] = 1
		}
	case Normal, Residual:
		std := 0.02
		if kind == Residual {
			std /= math.Sqrt(2 * float64(layers))
		}
		s := rng.New(rng.Key(seed, 0, index, rng.PurposeInit))
		for i := range w {
			w[i] = F(std * s.Normal())
		}
	}
}

// Tensor is one parameter with its values.
type Tensor struct {
	params.Param
	W []float32
}

// Initial is model m's fresh initialisation for seed, every parameter in params.Walk's
// order: the weights runtime/nn's New draws.
func Initial(m *program.Model, seed int64) ([]Tensor, error) {
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	walk, err := params.Walk(m)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	out := make([]Tensor, len(walk))
	for i, p := range walk {
		w := make([]float32, p.Elements())
		Fill(w, p.Shape, InitOf(p.ID), seed, i, d.L)
		out[i] = Tensor{Param: p, W: w}
	}
	return out, nil
}

// Safetensors are ts as checkpoint tensors (sharing their values).
func Safetensors(ts []Tensor) []safetensors.Tensor {
	out := make([]safetensors.Tensor, len(ts))
	for i, t := range ts {
		out[i] = safetensors.Tensor{Name: t.Name, Shape: t.Shape, Data: t.W}
	}
	return out
}
