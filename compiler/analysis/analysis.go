package analysis

import "github.com/moec-dev/moec/compiler/program"

// Components breaks a parameter count down by part of the model.
type Components struct {
	Embedding       int64 // input token embedding (padded rows)
	Position        int64 // learned position table, or T5 relative-bias tables (one per stack)
	Head            int64 // output projection (0 when tied to the embedding)
	Attention       int64 // all attention projections (self and cross), sinks, talking-heads mixers, q/k norms, MLA's inner norms
	DenseFFN        int64 // dense FFNs (dense layers and parallel-dense FFNs in MoE layers)
	RoutedExperts   int64 // all routed experts
	SharedExperts   int64 // all shared experts
	Router          int64 // router projections and biases
	RouterEmbedding int64 // the dedicated token-embedding router table (one per model, shared by every MoE layer)
	Norms           int64 // every block norm's weights (and biases) and the final norms
}

// Sum adds the components.
func (c Components) Sum() int64 {
	return c.Embedding + c.Position + c.Head + c.Attention + c.DenseFFN + c.RoutedExperts +
		c.SharedExperts + c.Router + c.RouterEmbedding + c.Norms
}

// lookups is the part of the components that is a table read by index, not a matmul:
// what the "non-embedding" convention leaves out together with the head.
func (c Components) lookups() int64 { return c.Embedding + c.Position + c.RouterEmbedding }

// LayerCounts is one layer's parameters.
type LayerCounts struct {
	Index     int  // index within its stack (encoder or decoder)
	Encoder   bool // an encoder layer of an encoder-decoder model
	MoE       bool
	Attention int64 // self-attention, plus cross-attention in a decoder layer of an encoder-decoder model
	DenseFFN  int64
	PerExpert int64 // one routed expert
	Experts   int64 // all routed experts of the layer
	Shared    int64
	Router    int64
	Norms     int64
	Total     int64
	Active    int64 // per token

	// Additive (read by the report): what makes two layers differ when their counts agree.
	Cross  bool // has cross-attention (decoder layer of an encoder-decoder model)
	OwnsKV bool // holds its own K/V projections (false: shares those of an earlier layer, share_kv > 1)
	TopK   int  // routed experts per token (0 in a dense layer)
}

// Counts is the exact parameter count of a model.
//
// Conventions (see also Conventions):
//   - TotalAll and ActiveAll count every trainable parameter, the input embedding and the
//     output head included, a tied matrix once, MTP modules and buffers excluded. This is the
//     convention of the published Mixtral (46.7B / 12.9B) and DeepSeek-V3 (671B / 37B, the
//     latter truncated: the exact active count is 37.55B) figures.
//   - Active counts whole tables (embedding, learned positions, router table) although one
//     token reads only one row of each, as those published figures do.
//   - Active includes the query/key projections of layers that, with attention-weight sharing
//     (share_weights < 1), may reuse the attention weights of the layer below: the parameters
//     stay live; only FLOPs are expected values (see CountFLOPs).
type Counts struct {
	Total     Components // every parameter, tied matrices counted once; excludes MTP modules
	Active    Components // parameters one token touches (top_k routed experts per MoE layer)
	Layers    []LayerCounts
	MTP       int64 // multi-token-prediction modules, reported apart from the headline total
	TotalAll  int64 // Total.Sum()
	ActiveAll int64 // Active.Sum()
	// Conventions: the same totals without the input embedding (and learned positions and
	// the router's token table) and without the output head, as papers variously report them.
	TotalNoEmbedding  int64
	ActiveNoEmbedding int64
	// The same totals without the input lookups only (token embedding unless tied to the
	// head, learned positions, the router's token table), the output head kept: DeepSeek's
	// "activated parameters" convention.
	TotalNoInput  int64
	ActiveNoInput int64

	// Additive fields.
	MTPActive    int64         // parameters one token touches in the MTP modules (shared embedding and head excluded)
	Buffers      int64         // non-trainable state: aux-loss-free routing biases (experts per MoE layer); not parameters
	EncoderCount int           // layers of Layers that belong to the encoder (they come first)
	MTPLayers    []LayerCounts // the transformer layer of each MTP module
}

// FLOPs are floating-point operations per token (a multiply-add counts as 2).
//
// Conventions:
//   - Matmuls: 2 × the active matmul weights (embedding and position lookups and the router
//     table lookup excluded; the output head included, tied or not; biases and norms, which
//     are elementwise, excluded).
//   - Attention: per layer 2·ctx·heads·qk_dim (QK^T) + 2·ctx·heads·v_dim (AV), plus
//     2·2·ctx·heads² for talking heads. Causal self-attention uses the exact mean context over
//     the positions of a sequence, (seq+1)/2 (with a window W < seq: the mean of min(i+1, W));
//     encoder self-attention and cross-attention read all seq positions.
//   - Attention-weight sharing (share_weights = p < 1): every layer but the first of its stack
//     computes its attention weights with probability p and otherwise reuses the layer
//     below's; the query (and, without MLA, key) projections, QK^T and the talking-heads
//     mixers are counted with weight p (expected FLOPs).
//   - Encoder-decoder: a token is one encoder position plus one decoder position.
//   - Train = 3 × (forward + MTP forward): backward is twice the forward, no recomputation.
type FLOPs struct {
	SeqLen            int64
	ForwardPerToken   float64 // matmuls of the active parameters plus the attention term
	AttentionPerToken float64 // the QK^T and AV term at SeqLen (causal: averaged over positions)
	TrainPerToken     float64 // forward + backward (backward = 2x forward), no recompute
	RouterPerToken    float64

	// Additive fields.
	MatmulPerToken float64 // the matmul part of ForwardPerToken (includes RouterPerToken and the head)
	HeadPerToken   float64 // the output head's part of MatmulPerToken
	MTPPerToken    float64 // forward FLOPs of the MTP modules (not in ForwardPerToken; in TrainPerToken)
}

// Count returns the exact parameter counts of m.
func Count(m *program.Model) Counts {
	return resolve(m).count()
}

// CountFLOPs returns FLOPs per token of m at sequence length seqLen (the model's SeqLen when
// seqLen <= 0).
func CountFLOPs(m *program.Model, seqLen int64) FLOPs {
	return resolve(m).flops(seqLen)
}
