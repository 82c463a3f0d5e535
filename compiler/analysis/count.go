package analysis

import "github.com/moec-dev/moec/compiler/program"

// RelativeBuckets is the number of T5 relative-position buckets per head (T5's
// relative_attention_num_buckets). Each stack (encoder, decoder) holds one
// RelativeBuckets × heads bias table, in its first layer, shared by all its layers.
const RelativeBuckets = 32

// layerPart is one layer's counts plus what the FLOPs count needs from it.
type layerPart struct {
	LayerCounts
	self, cross attnParts // cross is zero without cross-attention
	matmul      int64     // active matmul weights, router and attention projections included
	qk          int64     // of matmul: skipped when the layer reuses attention weights
	router      int64     // router matmul weights (E × input width)
}

// layer counts layer i of a stack. cross adds cross-attention (a decoder layer of an
// encoder-decoder model); moe says whether its FFN is a mixture of experts.
func (s *spec) layer(i int, encoder, cross, moe bool) layerPart {
	lp := layerPart{LayerCounts: LayerCounts{Index: i, Encoder: encoder, Cross: cross, MoE: moe}}
	lc := &lp.LayerCounts
	lc.OwnsKV = i%s.shareKV == 0
	s.part = "attention"
	lp.self = s.attention(lc.OwnsKV)
	lc.Attention = lp.self.params
	lp.matmul, lp.qk = lp.self.matmul, lp.self.qk
	blocks := int64(2) // attention and FFN
	if cross {
		// Cross-attention has the same projections as self-attention (queries from the
		// decoder, keys and values from the encoder output) and never shares K/V across layers.
		lp.cross = s.attention(true)
		lc.Attention = s.add(lc.Attention, lp.cross.params)
		lp.matmul = s.add(lp.matmul, lp.cross.matmul)
		blocks++
	}
	s.part = "norm"
	lc.Norms = s.mul(blocks, s.normsPerBlock(), s.normParams(s.d))

	s.part = "dense FFN"
	dense := s.ffn(s.m.FFN.Hidden, s.m.FFN.Activation, s.m.FFN.Bias)
	if !moe {
		lc.DenseFFN = dense.total()
		lp.matmul = s.add(lp.matmul, dense.weights)
	} else {
		e := s.moe
		lc.TopK = e.TopK
		s.part = "routed expert"
		expert := s.ffn(e.ExpertHidden, e.Activation, e.ExpertBias)
		lc.PerExpert = expert.total()
		lc.Experts = s.mul(int64(e.Experts), lc.PerExpert)
		s.part = "shared expert"
		shared := s.ffn(e.SharedHidden, e.Activation, e.ExpertBias)
		lc.Shared = s.mul(int64(e.SharedExperts), shared.total())
		var gate int64
		if e.SharedGate && e.SharedExperts > 0 {
			// Qwen2-MoE's shared_expert_gate: one d_model → 1 projection per MoE layer, read
			// by every token, so it is active and a matmul like the experts it scales.
			gate = s.d
			lc.Shared = s.add(lc.Shared, gate)
		}
		s.part = "router"
		in := s.d
		if e.Router == program.RouteTokenEmbedding {
			in = e.RouterDim
		}
		lp.router = s.mul(int64(e.Experts), in)
		lc.Router = lp.router
		if e.RouterBias {
			lc.Router = s.add(lc.Router, int64(e.Experts))
		}
		s.part = "active"
		lp.matmul = s.add(lp.matmul, lp.router, s.mul(int64(e.TopK), expert.weights), s.mul(int64(e.SharedExperts), shared.weights), gate)
		if e.ParallelDense {
			lc.DenseFFN = dense.total()
			lp.matmul = s.add(lp.matmul, dense.weights)
		}
		if e.ParallelAttention {
			// Arctic's residual_layernorm: the dense FFN's own norm in an MoE layer.
			s.part = "norm"
			lc.Norms = s.add(lc.Norms, s.normParams(s.d))
		}
	}
	s.part = "layer"
	lc.Total = s.add(lc.Attention, lc.DenseFFN, lc.Experts, lc.Shared, lc.Router, lc.Norms)
	lc.Active = s.add(lc.Attention, lc.DenseFFN, s.mul(int64(lc.TopK), lc.PerExpert), lc.Shared, lc.Router, lc.Norms)
	return lp
}

// eachLayer calls f with every layer of the model, the encoder stack first, then the
// decoder. It builds no list: layers may be many, and FLOPs need only a running sum.
func (s *spec) eachLayer(f func(layerPart)) {
	for i := 0; i < s.m.Encoder; i++ {
		f(s.layer(i, true, false, s.isMoE(i, true)))
	}
	for i := 0; i < s.m.Layers; i++ {
		f(s.layer(i, false, s.m.Encoder > 0, s.isMoE(i, false)))
	}
}

// layerCount is the number of layers eachLayer visits.
func (s *spec) layerCount() int { return max(s.m.Encoder, 0) + max(s.m.Layers, 0) }

// stacks is 2 for an encoder-decoder model, else 1.
func (s *spec) stacks() int64 {
	if s.m.Encoder > 0 {
		return 2
	}
	return 1
}

// mtpModule is one DeepSeek-V3 multi-token-prediction module: a transformer layer of the
// model's kind (MoE when the model has one), eh_proj 2d→d, the two input norms (enorm over
// the embedding, hnorm over the previous depth's hidden state) and, when the model has a
// final norm, the module's own norm before the shared head (shared_head.norm in the
// released checkpoint). The embedding and the output head are shared with the main model.
func (s *spec) mtpModule(k int) (lp layerPart, total, active int64) {
	// Index 0: a module is a stack of its own, so it holds its own K/V projections.
	lp = s.layer(0, false, false, s.moe != nil)
	lp.Index = k
	s.part = "MTP module"
	eh := s.mul(2, s.d, s.d)
	extra := s.add(eh, s.mul(2, s.normParams(s.d)))
	if s.m.FinalNorm {
		extra = s.add(extra, s.normParams(s.d))
	}
	lp.matmul = s.add(lp.matmul, eh)
	return lp, s.add(lp.Total, extra), s.add(lp.Active, extra)
}

func (s *spec) count() Counts {
	var c Counts
	m := &s.m
	s.part = "embedding"
	emb := s.mul(s.vocab, s.d)
	c.Total.Embedding = emb
	s.part = "position"
	switch m.Position {
	case program.Learned:
		c.Total.Position = s.mul(m.MaxPosition, s.d)
	case program.Relative:
		c.Total.Position = s.mul(s.stacks(), RelativeBuckets, s.heads)
	}
	if !m.TieEmbeddings {
		c.Total.Head = emb
	}
	if m.HeadBias {
		c.Total.Head = s.add(c.Total.Head, s.vocab)
	}
	if m.FinalNorm {
		s.part = "norm"
		c.Total.Norms = s.mul(s.stacks(), s.normParams(s.d))
	}
	c.Active = c.Total

	anyMoE := false
	c.Layers = make([]LayerCounts, 0, s.layerCount())
	s.eachLayer(func(lp layerPart) {
		lc := lp.LayerCounts
		c.Layers = append(c.Layers, lc)
		if lc.Encoder {
			c.EncoderCount++
		}
		s.part = "total"
		for _, comp := range []*Components{&c.Total, &c.Active} {
			comp.Attention = s.add(comp.Attention, lc.Attention)
			comp.DenseFFN = s.add(comp.DenseFFN, lc.DenseFFN)
			comp.SharedExperts = s.add(comp.SharedExperts, lc.Shared)
			comp.Router = s.add(comp.Router, lc.Router)
			comp.Norms = s.add(comp.Norms, lc.Norms)
		}
		s.part = "routed expert"
		c.Total.RoutedExperts = s.add(c.Total.RoutedExperts, lc.Experts)
		c.Active.RoutedExperts = s.add(c.Active.RoutedExperts, s.mul(int64(lc.TopK), lc.PerExpert))
		if lc.MoE {
			anyMoE = true
			if s.moe.AuxFreeBias > 0 {
				c.Buffers = s.add(c.Buffers, int64(s.moe.Experts))
			}
		}
	})
	if anyMoE && s.moe.Router == program.RouteTokenEmbedding {
		// One table for the model: a token's routing vector does not depend on the layer;
		// each MoE layer's own projection makes the choice layer-specific.
		s.part = "router"
		c.Total.RouterEmbedding = s.mul(s.vocab, s.moe.RouterDim)
		c.Active.RouterEmbedding = c.Total.RouterEmbedding
	}

	for k := 0; k < m.MTPDepth; k++ {
		lp, total, active := s.mtpModule(k)
		c.MTPLayers = append(c.MTPLayers, lp.LayerCounts)
		c.MTP = s.add(c.MTP, total)
		c.MTPActive = s.add(c.MTPActive, active)
	}

	s.part = "total"
	c.TotalAll = s.sum(c.Total)
	c.ActiveAll = s.sum(c.Active)
	// The with_mtp convention (Conventions) adds the MTP modules: it must fit as well.
	s.add(c.TotalAll, c.MTP)
	s.add(c.ActiveAll, c.MTPActive)
	c.TotalNoEmbedding = c.TotalAll - c.Total.lookups() - c.Total.Head
	c.ActiveNoEmbedding = c.ActiveAll - c.Active.lookups() - c.Active.Head
	// A tied matrix is the head as well: it stays.
	inputT, inputA := c.Total.lookups(), c.Active.lookups()
	if m.TieEmbeddings {
		inputT, inputA = inputT-c.Total.Embedding, inputA-c.Active.Embedding
	}
	c.TotalNoInput, c.ActiveNoInput = c.TotalAll-inputT, c.ActiveAll-inputA
	return c
}

// sum is Components.Sum with overflow detection. With it passed, lookups (a part of the
// same sum) cannot overflow either.
func (s *spec) sum(c Components) int64 {
	return s.add(c.Embedding, c.Position, c.Head, c.Attention, c.DenseFFN, c.RoutedExperts,
		c.SharedExperts, c.Router, c.RouterEmbedding, c.Norms)
}

// Convention is one way of stating a model's size.
type Convention struct {
	Name        string // stable identifier (report.json)
	Description string
	Total       int64
	Active      int64
}

// Conventions lists the counts under each convention papers use, headline first.
func (c Counts) Conventions() []Convention {
	out := []Convention{
		{
			Name:        "all",
			Description: "every trainable parameter: input embedding and output head included (a tied matrix once), MTP modules and buffers excluded; active counts whole lookup tables",
			Total:       c.TotalAll, Active: c.ActiveAll,
		},
		{
			Name:        "non_embedding",
			Description: "without the token embedding, learned positions, the router's token table and the output head",
			Total:       c.TotalNoEmbedding, Active: c.ActiveNoEmbedding,
		},
	}
	if c.MTP > 0 {
		out = append(out, Convention{
			Name:        "with_mtp",
			Description: "all, plus the multi-token-prediction modules (as a released checkpoint stores them, shared embedding and head once)",
			Total:       c.TotalAll + c.MTP, Active: c.ActiveAll + c.MTPActive,
		})
	}
	if c.Buffers > 0 {
		out = append(out, Convention{
			Name:        "with_buffers",
			Description: "all, plus the non-trainable routing biases a checkpoint stores beside the parameters (DeepSeek-V3's e_score_correction_bias: one per expert and MoE layer)",
			Total:       c.TotalAll + c.Buffers, Active: c.ActiveAll,
		})
	}
	out = append(out, Convention{
		Name:        "no_input_embedding",
		Description: "without the input lookups (token embedding unless tied to the head, learned positions, the router's token table), the output head kept: DeepSeek's convention for activated parameters",
		Total:       c.TotalNoInput, Active: c.ActiveNoInput,
	})
	return out
}
