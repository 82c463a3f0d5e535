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
	Sigmoid    bool               // router score: sigmoid instead of softmax
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
func ShapeOf(m *program.Model) (Shape, error) {
	if m == nil {
		return Shape{}, fmt.Errorf("no model")
	}
	moe := m.MoE
	if moe == nil || moe.Experts < 1 {
		moe = &program.MoE{Experts: 1, TopK: 1, ExpertHidden: m.FFN.Hidden, Activation: m.FFN.Activation,
			Score: program.Softmax, Normalize: true}
	}
	sh := Shape{
		DModel:     m.DModel,
		Experts:    int64(moe.Experts),
		TopK:       int64(moe.TopK),
		Hidden:     moe.ExpertHidden,
		Activation: moe.Activation,
		RouterDim:  m.DModel,
		TokenRoute: moe.Router == program.RouteTokenEmbedding,
		Sigmoid:    moe.Score == program.Sigmoid,
		Normalize:  moe.Normalize,
		RouterBias: moe.RouterBias,
		Vocab:      m.PaddedVocab(),
		Heads:      int64(m.Attention.Heads),
		HeadDim:    m.Attention.HeadDim,
		NormEps:    float32(m.NormEps),
	}
	if sh.TokenRoute && moe.RouterDim > 0 {
		sh.RouterDim = moe.RouterDim
	}
	if sh.Hidden <= 0 {
		sh.Hidden = m.FFN.Hidden
	}
	if sh.Activation == "" {
		sh.Activation = m.FFN.Activation
	}
	if sh.HeadDim <= 0 && sh.Heads > 0 {
		sh.HeadDim = m.DModel / sh.Heads
	}
	if sh.NormEps <= 0 {
		sh.NormEps = program.DefaultNormEps
	}
	return sh, sh.Validate()
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
	switch sh.Activation {
	case program.ReLU, program.GELU, program.SiLU, program.SwiGLU, program.GeGLU:
	default:
		return fmt.Errorf("unknown expert activation %q", sh.Activation)
	}
	return nil
}
