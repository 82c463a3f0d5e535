package analysis

import "github.com/moec-dev/moec/compiler/program"

// spec is a model with every default the language reference documents filled in, so the
// counting code reads plain numbers. The sizes are the model's one resolution
// (program.Model.Dims), read even where Dims reports an error: the counter also counts
// models the runtime does not build (MLA, encoder-decoder, multi-token prediction) and
// partial models built in Go (tests, the planner's what-ifs), and a zero field must not
// turn into a division by zero.
type spec struct {
	m       program.Model
	moe     *program.MoE // nil for a dense model (also when experts <= 0)
	vocab   int64        // padded embedding rows
	d       int64
	heads   int64
	kvHeads int64
	headDim int64
	mla     bool
	shareKV int
	share   float64 // probability a layer recomputes its attention weights

	// Overflow detection (see mul and add): part names what is being counted, overflow the
	// first part whose count left int64 ("" while every count fits).
	part, overflow string
}

func resolve(in *program.Model) *spec {
	s := &spec{m: *in}
	m := &s.m
	// The two documented defaults Dims leaves to compiler/check (see Dims).
	if m.FFN.Hidden <= 0 {
		m.FFN.Hidden = 4 * m.DModel
	}
	if m.FFN.Activation == "" {
		m.FFN.Activation = program.GELU
	}
	dims, _ := m.Dims() // errors are the runtime's to report; the sizes are filled regardless
	m.Norm, m.NormPlacement = dims.Norm, dims.Placement
	if m.Position == program.Learned {
		m.MaxPosition = int64(dims.MaxPos)
	}
	s.vocab, s.d = int64(dims.V), int64(dims.D)
	s.heads, s.kvHeads, s.headDim = int64(dims.H), int64(dims.KV), int64(dims.Dh)
	s.mla = m.Attention.MLA || m.Attention.KVLoraRank > 0
	s.shareKV = dims.ShareKV
	s.share = m.Attention.RecomputeProbability()

	if in.MoE != nil && in.MoE.Experts > 0 {
		moe := *in.MoE
		// Counting clamps top_k into [1, experts] where Dims refuses it.
		moe.TopK = min(max(moe.TopK, 1), moe.Experts)
		moe.ExpertHidden, moe.SharedHidden = int64(dims.EHidden), int64(dims.SHidden)
		moe.Activation = dims.ExpertActivation
		moe.RouterDim = int64(dims.RouterIn)
		if moe.Router == "" {
			moe.Router = program.RouteHidden
		}
		s.moe = &moe
		m.MoE = &moe
	} else {
		m.MoE = nil
	}
	return s
}

// normParams is one norm over width w: RMSNorm has a weight, LayerNorm a weight and a bias.
func (s *spec) normParams(w int64) int64 {
	if s.m.Norm == program.LayerNorm && !s.m.NormNoBias {
		return s.mul(2, w)
	}
	return w
}

// normsPerBlock is how many norms wrap one residual block (attention, cross-attention, FFN).
func (s *spec) normsPerBlock() int64 {
	if s.m.NormPlacement == program.SandwichNorm {
		return 2
	}
	return 1
}

// isMoE reports whether layer i of a stack has an MoE FFN.
func (s *spec) isMoE(i int, encoder bool) bool {
	if s.moe == nil {
		return false
	}
	if encoder && !s.moe.EncoderMoE {
		return false
	}
	return s.moe.IsMoELayer(i)
}

// ffnParts is one feed-forward network d → hidden → d.
type ffnParts struct {
	weights int64 // matmul weights: 3·d·h gated (gate, up, down), 2·d·h otherwise
	biases  int64
}

func (p ffnParts) total() int64 { return p.weights + p.biases }

func (s *spec) ffn(hidden int64, act program.Activation, bias bool) ffnParts {
	var p ffnParts
	mats := int64(2)
	if act.Gated() {
		mats = 3
	}
	p.weights = s.mul(mats, s.d, hidden)
	if bias {
		p.biases = s.add(s.mul(mats-1, hidden), s.d)
	}
	return p
}
