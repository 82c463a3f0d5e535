package kernels

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// Shape is everything about a model the kernels are specialised to. Token counts are not
// here: they are runtime parameters of each kernel.
type Shape struct {
	DModel     int64
	Experts    int64
	TopK       int64
	Hidden     int64              // expert_hidden
	Activation program.Activation // expert activation
	RouterDim  int64              // width of what the router reads (d_model for hidden routing)
	TokenRoute bool               // router reads a token-embedding table row, not the hidden state
	Score      program.Score      // router score function ("" is softmax, the default)
	Normalize  bool               // renormalise the top-k gates to sum to one
	RouterBias bool
	Vocab      int64 // padded vocabulary (rows of the logits)
	Heads      int64
	HeadDim    int64
	NormEps    float32
}

// ShapeOf reads the kernel shape of a model as a stage sees it (program.StageModel). A
// dense model or stage (MoE == nil, as in a warm-start stage with experts = 1) gets the
// shape of one expert with the FFN's width and activation: with one expert the router
// gives every token gate 1 and the expert kernels are exactly the dense FFN.
//
// The sizes are the model's one resolution (program.Model.Dims): the kernels fill no
// default of their own. A model Dims refuses is refused here too, after Validate, whose
// messages name what no kernel can be generated for.
func ShapeOf(m *program.Model) (Shape, error) {
	if m == nil {
		return Shape{}, fmt.Errorf("no model")
	}
	d, dimsErr := m.Dims()
	sh := Shape{
		DModel:     int64(d.D),
		Experts:    1,
		TopK:       1,
		Hidden:     int64(d.Hidden),
		Activation: d.FFNActivation,
		RouterDim:  int64(d.D),
		Score:      program.Softmax,
		Normalize:  true,
		Vocab:      int64(d.V),
		Heads:      int64(d.H),
		HeadDim:    int64(d.Dh),
		NormEps:    float32(d.NormEps),
	}
	if moe := m.MoE; moe != nil && moe.Experts >= 1 {
		sh.Experts, sh.TopK = int64(d.E), int64(d.K)
		sh.Hidden, sh.Activation, sh.RouterDim = int64(d.EHidden), d.ExpertActivation, int64(d.RouterIn)
		sh.TokenRoute = moe.Router == program.RouteTokenEmbedding
		sh.Score = moe.Score
		sh.Normalize = moe.Normalize
		sh.RouterBias = moe.RouterBias
	}
	if err := sh.Validate(); err != nil {
		return sh, err
	}
	if dimsErr != nil {
		return sh, fmt.Errorf("kernel shape: %w", dimsErr)
	}
	return sh, nil
}

// Validate rejects shapes no kernel can be generated for. The checker reports these to
// the user with positions; this is the last line of defence for programmatic callers.
func (sh Shape) Validate() error {
	switch {
	case sh.DModel < 1, sh.Experts < 1, sh.TopK < 1, sh.Hidden < 1, sh.RouterDim < 1, sh.Vocab < 1:
		return fmt.Errorf("kernel shape has a non-positive size: %+v", sh)
	case sh.TopK > sh.Experts:
		return fmt.Errorf("top_k %d > experts %d", sh.TopK, sh.Experts)
	case sh.Heads < 1 || sh.HeadDim < 2 || sh.HeadDim%2 != 0:
		return fmt.Errorf("rotary needs an even head_dim, have heads %d head_dim %d", sh.Heads, sh.HeadDim)
	}
	if !sh.Activation.Known() {
		return fmt.Errorf("unknown expert activation %q", sh.Activation)
	}
	if sh.Score != "" && !sh.Score.Known() {
		return fmt.Errorf("unknown router score %q", sh.Score)
	}
	return nil
}
