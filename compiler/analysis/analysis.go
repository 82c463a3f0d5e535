package analysis

import "github.com/moec-dev/moec/compiler/program"

// Components breaks a parameter count down by part of the model.
type Components struct {
	Embedding       int64 // input token embedding (padded rows)
	Position        int64 // learned position table
	Head            int64 // output projection (0 when tied to the embedding)
	Attention       int64 // all attention projections, sinks, talking-heads mixers, q/k norms
	DenseFFN        int64 // dense FFNs (dense layers and parallel-dense FFNs in MoE layers)
	RoutedExperts   int64 // all routed experts
	SharedExperts   int64 // all shared experts
	Router          int64 // router projections and biases
	RouterEmbedding int64 // dedicated token-embedding router tables
	Norms           int64 // every norm's weights (and biases)
}

// Sum adds the components.
func (c Components) Sum() int64 {
	return c.Embedding + c.Position + c.Head + c.Attention + c.DenseFFN + c.RoutedExperts +
		c.SharedExperts + c.Router + c.RouterEmbedding + c.Norms
}

// LayerCounts is one layer's parameters.
type LayerCounts struct {
	Index       int
	Encoder     bool
	MoE         bool
	Attention   int64
	DenseFFN    int64
	PerExpert   int64 // one routed expert
	Experts     int64 // all routed experts of the layer
	Shared      int64
	Router      int64
	Norms       int64
	Total       int64
	Active      int64 // per token
}

// Counts is the exact parameter count of a model.
type Counts struct {
	Total      Components // every parameter, tied matrices counted once; excludes MTP modules
	Active     Components // parameters one token touches (top_k routed experts per MoE layer)
	Layers     []LayerCounts
	MTP        int64 // multi-token-prediction modules, reported apart from the headline total
	TotalAll   int64 // Total.Sum()
	ActiveAll  int64 // Active.Sum()
	// Conventions: the same totals without the input embedding (and learned positions)
	// and without the output head, as papers variously report them.
	TotalNoEmbedding  int64
	ActiveNoEmbedding int64
}

// FLOPs are floating-point operations per token (a multiply-add counts as 2).
type FLOPs struct {
	SeqLen            int64
	ForwardPerToken   float64 // matmuls of the active parameters plus the attention term
	AttentionPerToken float64 // the QK^T and AV term at SeqLen (causal: averaged over positions)
	TrainPerToken     float64 // forward + backward (backward = 2x forward), no recompute
	RouterPerToken    float64
}

// Count returns the exact parameter counts of m.
func Count(m *program.Model) Counts {
	panic("analysis.Count: not yet implemented")
}

// CountFLOPs returns FLOPs per token of m at sequence length seqLen.
func CountFLOPs(m *program.Model, seqLen int64) FLOPs {
	panic("analysis.CountFLOPs: not yet implemented")
}
