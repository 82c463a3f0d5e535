package analysis

import "github.com/moec-dev/moec/compiler/program"

// spec is a model with every default the language reference documents filled in, so the
// counting code reads plain numbers. compiler/check already fills these; resolving again
// here keeps Count exact for models built directly in Go (tests, the planner's what-ifs)
// and keeps a zero field from turning into a division by zero.
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
	if m.Norm == "" {
		m.Norm = program.RMSNorm
	}
	if m.NormPlacement == "" {
		m.NormPlacement = program.PreNorm
	}
	if m.MaxPosition <= 0 {
		m.MaxPosition = m.SeqLen
	}
	if m.FFN.Hidden <= 0 {
		m.FFN.Hidden = 4 * m.DModel
	}
	if m.FFN.Activation == "" {
		m.FFN.Activation = program.GELU
	}
	s.vocab = m.PaddedVocab()
	s.d = m.DModel

	a := &m.Attention
	s.heads = int64(a.Heads)
	s.kvHeads = int64(a.KVHeads)
	if s.kvHeads <= 0 {
		s.kvHeads = s.heads
	}
	s.headDim = a.HeadDim
	if s.headDim <= 0 && s.heads > 0 {
		s.headDim = s.d / s.heads
	}
	s.mla = a.MLA || a.KVLoraRank > 0
	s.shareKV = a.ShareKV
	if s.shareKV < 1 {
		s.shareKV = 1
	}
	s.share = a.RecomputeProbability()

	if in.MoE != nil && in.MoE.Experts > 0 {
		moe := *in.MoE
		if moe.TopK <= 0 {
			moe.TopK = 1
		}
		if moe.TopK > moe.Experts {
			moe.TopK = moe.Experts
		}
		if moe.ExpertHidden <= 0 {
			moe.ExpertHidden = m.FFN.Hidden
		}
		if moe.Activation == "" {
			moe.Activation = m.FFN.Activation
		}
		if moe.SharedHidden <= 0 {
			moe.SharedHidden = moe.ExpertHidden
		}
		if moe.Router == "" {
			moe.Router = program.RouteHidden
		}
		if moe.RouterDim <= 0 {
			moe.RouterDim = s.d
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
	if s.m.Norm == program.LayerNorm {
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
