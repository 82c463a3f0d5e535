package program

import (
	"math"
	"slices"
)

// Program is a checked .moe file (with its imports): every value resolved after
// inheritance, expressions and defaults. Maps are keyed by declaration name; the *Order
// slices keep source order so that output is deterministic.
type Program struct {
	Models      map[string]*Model
	Clusters    map[string]*Cluster
	Trains      map[string]*Train
	Serves      map[string]*Serve
	Compresses  map[string]*Compress
	Experiments map[string]*Experiment

	ModelOrder, ClusterOrder, TrainOrder, ServeOrder, CompressOrder, ExperimentOrder []string

	// Explain lists every resolved value with where it came from, in declaration order.
	Explain []Provenance
}

// SourceKind says where a resolved value came from.
type SourceKind string

const (
	Written   SourceKind = "written"   // written in this declaration
	Inherited SourceKind = "inherited" // from the base model (Provenance.From names it)
	Default   SourceKind = "default"   // moec's default
	Derived   SourceKind = "derived"   // computed from other values (e.g. head_dim = d_model / heads)
)

// Provenance records one resolved value for `moec check --explain`.
type Provenance struct {
	Path   string     // e.g. "model hunyuan_tiny.attention.heads"
	Value  string     // canonical text of the resolved value
	Source SourceKind //
	From   string     // for Inherited: the declaration it came from; for Written: "file:line:col"
}

// Norm is a normalisation kind.
type Norm string

const (
	RMSNorm   Norm = "rmsnorm"
	LayerNorm Norm = "layernorm"
)

// NormPlacement says where norms sit in a block.
type NormPlacement string

const (
	PreNorm      NormPlacement = "pre"      // x + f(norm(x))
	PostNorm     NormPlacement = "post"     // norm(x + f(x))
	SandwichNorm NormPlacement = "sandwich" // x + norm(f(norm(x)))
)

// Position is a position encoding.
type Position string

const (
	Rotary     Position = "rotary"
	Learned    Position = "learned"
	NoPosition Position = "none"
	Relative   Position = "relative" // T5-style bucketed relative bias (Switch Transformer)
)

// Activation of an FFN or expert.
type Activation string

const (
	ReLU   Activation = "relu"
	GELU   Activation = "gelu"
	SiLU   Activation = "silu"
	SwiGLU Activation = "swiglu"
	GeGLU  Activation = "geglu"
)

// Gated reports whether the activation has a gate projection (three matrices, not two).
func (a Activation) Gated() bool { return a == SwiGLU || a == GeGLU }

// Model is a resolved model declaration.
type Model struct {
	Name    string
	Extends string // base model name, "" when none

	Vocab      int64 // vocabulary as written
	VocabPadTo int64 // the embedding rows are padded to a multiple of this (1 = no padding)
	DModel     int64
	Layers     int   // decoder layers (the only stack of a decoder-only model)
	Encoder    int   // encoder layers of an encoder-decoder model (0 = decoder-only)
	SeqLen     int64 // training/serving sequence length

	Norm          Norm
	NormEps       float64
	NormPlacement NormPlacement
	FinalNorm     bool // a norm before the output head

	Position    Position
	RopeBase    float64 // rotary base (theta); meaningful when Position == Rotary
	MaxPosition int64   // learned position table rows (defaults to SeqLen)
	// RopeScaling stretches the rotary frequencies (yarn, linear, dynamic NTK, llama3;
	// rope.go); nil is plain rotary. omitempty keeps the config hash of every model
	// without it as it was.
	RopeScaling *RopeScaling `json:",omitempty"`

	TieEmbeddings bool // output head shares the input embedding matrix
	// NormNoBias drops the LayerNorms' biases (DBRX's nn.LayerNorm(bias=False)); HeadBias
	// adds a bias to the output head (Phi-3.5-MoE's lm_head_bias). omitempty keeps the
	// config hash of every model without them as it was.
	NormNoBias bool `json:",omitempty"`
	HeadBias   bool `json:",omitempty"`
	MTPDepth   int  // DeepSeek-style multi-token-prediction modules (not counted in headline total)

	Attention Attention
	FFN       FFN
	MoE       *MoE // nil for a dense model
}

// PaddedVocab is the number of embedding rows after padding.
func (m *Model) PaddedVocab() int64 {
	if m.VocabPadTo <= 1 {
		return m.Vocab
	}
	return (m.Vocab + m.VocabPadTo - 1) / m.VocabPadTo * m.VocabPadTo
}

// IsMoELayer reports whether decoder layer i (0-based) has an MoE FFN.
func (m *Model) IsMoELayer(i int) bool {
	if m.MoE == nil || m.MoE.Experts <= 0 {
		return false
	}
	return m.MoE.IsMoELayer(i)
}

// Attention is the attention block of every layer.
type Attention struct {
	Heads   int
	KVHeads int   // = Heads for MHA, 1 for MQA, a divisor of Heads for GQA
	HeadDim int64 // defaults to DModel / Heads

	// Multi-head latent attention (DeepSeek-V2/V3). MLA is true when KVLoraRank > 0.
	MLA           bool
	QLoraRank     int64 // 0 = full-rank query projection
	KVLoraRank    int64
	QKNopeHeadDim int64
	QKRopeHeadDim int64
	VHeadDim      int64

	QKNorm       bool    // norms on queries and keys
	TalkingHeads bool    // learned head-mixing matrices before and after the softmax
	ShareWeights float64 // probability of recomputing attention weights per layer (1 = always)
	ShareKV      int     // cross-layer attention: adjacent groups of this many layers share K/V projections (1 = none)
	Sinks        bool    // learned per-head attention sink logits
	Window       int64   // sliding window (0 = full causal)

	BiasQKV bool
	BiasOut bool

	// QKNormFull makes the QKNorm norms span the whole projection (heads·head_dim for
	// queries, kv_heads·head_dim for keys), as OLMoE does, instead of one head_dim-wide norm
	// shared by all heads (Qwen3, Gemma 3). Meaningful only with QKNorm. omitempty keeps the
	// JSON, and so the config hash, of every model without it as it was.
	QKNormFull bool `json:",omitempty"`

	// QKNormAfterRope applies the QKNorm norms to the rotated queries and keys, as the
	// HunYuan models do (query_layernorm and key_layernorm after apply_rotary_pos_emb), and
	// gives every layer its own key norm: a layer that shares K/V (ShareKV > 1, HunYuan's
	// cross-layer attention) norms the owner's rotated keys with it. Meaningful only with
	// QKNorm; omitempty as for QKNormFull.
	QKNormAfterRope bool `json:",omitempty"`

	// ClipQKV clamps the query, key and value projections to [−ClipQKV, ClipQKV] (DBRX's
	// clip_qkv, OLMo's); 0 is none. omitempty as for QKNormFull.
	ClipQKV float64 `json:",omitempty"`

	// Llama 4's attention (all omitempty as for QKNormFull; none has parameters):
	// NopeEvery > 0 gives every NopeEvery-th layer, the last of each group, no rotary
	// positions (no_rope_layers: layer i rotates iff (i+1) % NopeEvery != 0). ChunkSize > 0
	// makes every rotary layer attend only within aligned chunks of that many positions
	// (attention_chunk_size); a layer without rotary positions attends to the whole causal
	// prefix. QKL2Norm RMS-normalises each head's rotated queries and keys without a learned
	// scale, in rotary layers only (use_qk_norm, Llama4TextL2Norm). NopeTemperature > 0
	// scales the queries of a layer without rotary positions at position p by
	// 1 + NopeTemperature·log(1 + floor((p+1)/NopeTemperatureFloor)) (attn_temperature_tuning
	// with attn_scale and floor_scale).
	NopeEvery            int     `json:",omitempty"`
	ChunkSize            int64   `json:",omitempty"`
	QKL2Norm             bool    `json:",omitempty"`
	NopeTemperature      float64 `json:",omitempty"`
	NopeTemperatureFloor int64   `json:",omitempty"`

	// FullEvery > 0 confines Window to some layers, as gpt-oss and Gemma 2 alternate: every
	// FullEvery-th layer, the last of each group, attends to the whole causal prefix, the
	// others within Window (gpt-oss's layer_types). omitempty as for QKNormFull.
	FullEvery int `json:",omitempty"`
}

// WindowAt is layer i's sliding window: Window, or 0 (full causal attention) in the layers
// FullEvery leaves whole.
func (a Attention) WindowAt(i int) int64 {
	if a.FullEvery > 0 && (i+1)%a.FullEvery == 0 {
		return 0
	}
	return a.Window
}

// Rotary reports whether layer i (0-based) of a rotary model rotates its queries and keys:
// all layers but those NopeEvery makes position-free.
func (a Attention) Rotary(i int) bool {
	return a.NopeEvery <= 0 || (i+1)%a.NopeEvery != 0
}

// RecomputeProbability is the probability that a layer after the first of its stack
// computes its own attention weights instead of reusing the layer below's (share_weights).
// An unset or out-of-range value means always (1), the language's default.
func (a Attention) RecomputeProbability() float64 {
	if a.ShareWeights <= 0 || a.ShareWeights > 1 {
		return 1
	}
	return a.ShareWeights
}

// SharesWeights reports whether attention-weight sharing is on: some layer may reuse the
// attention weights of the layer below (0 < share_weights < 1). Every package that asks
// "is sharing on?" asks this, so a Go-built model with share_weights unset (0) means the
// same everywhere: no sharing.
func (a Attention) SharesWeights() bool { return a.RecomputeProbability() < 1 }

// FFN is the dense feed-forward block.
type FFN struct {
	Hidden     int64
	Activation Activation
	Bias       bool
}

// RouterInput is what the router reads.
type RouterInput string

const (
	RouteHidden         RouterInput = "hidden"          // the layer's hidden state (usual)
	RouteTokenEmbedding RouterInput = "token_embedding" // a dedicated per-token vector (HunYuan)
)

// Score is the router's score function.
type Score string

const (
	Softmax Score = "softmax"
	Sigmoid Score = "sigmoid"
)

// Scores lists the router score functions moec computes, the language's default first.
// Adding one: a constant here and in this list (with UniformGate and CopyScale), then its forward and
// backward in runtime/nn (moe.go) and in the kernels (kernels/moe.go, the reference
// kernels/ref_moe.go), and docs/language.md.
func Scores() []Score { return []Score{Softmax, Sigmoid} }

// Known reports whether s is a score function moec computes.
func (s Score) Known() bool { return slices.Contains(Scores(), s) }

// RouterScore is a router's score of one expert from its logit z, where lse is the
// log-sum-exp of the token's logits (the softmax's normaliser, which the z-loss needs
// anyway): exp(z − lse) for softmax, 1/(1 + e^−z) for sigmoid. Every runtime (the
// executor, runtime/nn, the kernels' reference) scores through it, so a new score
// function is written here once.
func RouterScore[F ~float32 | ~float64](s Score, z F, lse float64) F {
	if s == Sigmoid {
		return F(1 / (1 + math.Exp(-float64(z))))
	}
	return F(math.Exp(float64(z) - lse))
}

// RouterScoreGrad turns d, the gradient of one token's scores st (as RouterScore wrote
// them), into the gradient of its logits, in place: d ⊙ st ⊙ (1 − st) for sigmoid, and
// st ⊙ (d − ⟨d, st⟩) for softmax.
func RouterScoreGrad[F ~float32 | ~float64](s Score, st, d []F) {
	if s == Sigmoid {
		for i, v := range st {
			d[i] *= v * (1 - v)
		}
		return
	}
	var sd F
	for i, v := range d {
		sd += v * st[i]
	}
	for i, v := range st {
		d[i] = v * (d[i] - sd)
	}
}

// UniformGate is the score every one of experts experts gets from a router whose logits
// are all equal (a router of zeros): 1/experts for softmax, 1/2 for sigmoid, 0 for a
// score moec does not compute.
func (s Score) UniformGate(experts int) float64 {
	switch s {
	case Softmax:
		return 1 / float64(max(experts, 1))
	case Sigmoid:
		return 0.5
	}
	return 0
}

// CopyScale is what growth multiplies each copy's output by when a router of from
// experts becomes one of to experts by copying them (to a multiple of from), so that the
// copies together give what their source gave: a softmax shares one distribution among
// all experts (to/from), a sigmoid scores each expert alone (1).
func (s Score) CopyScale(from, to int) float64 {
	if s == Softmax && from > 0 {
		return float64(to) / float64(from)
	}
	return 1
}

// MoE describes the mixture-of-experts FFN.
type MoE struct {
	Experts      int        // routed experts
	TopK         int        // experts per token
	ExpertHidden int64      // each expert's FFN width (defaults to FFN.Hidden)
	Activation   Activation // expert activation (defaults to FFN.Activation)
	ExpertBias   bool

	SharedExperts int   // always-on experts
	SharedHidden  int64 // each shared expert's width (defaults to ExpertHidden)

	// SharedGate scales the shared experts' summed output per token by sigmoid(x·g), g a
	// learned d_model vector (Qwen2-MoE's shared_expert_gate, Linear(d_model, 1) without
	// bias). Meaningful only with SharedExperts > 0; omitempty as for QKNormFull.
	SharedGate bool `json:",omitempty"`

	// Which decoder layers are MoE: if Layers is non-empty it is the explicit list;
	// otherwise layer i is MoE when i >= FirstDense and (i-FirstDense) % Every == Every-1
	// for Every > 1 ... see IsMoELayer for the exact rule.
	Every         int
	FirstDense    int
	Layers        []int
	ParallelDense bool // a dense FFN runs in parallel with the MoE in MoE layers (residual MoE)
	// ParallelAttention runs the experts beside attention, as Snowflake Arctic does
	// (parallel_attn_mlp_res): in an MoE layer they read the layer's input through the FFN
	// norm, while the dense FFN (ParallelDense, required) reads the post-attention stream
	// through a norm of its own (residual_layernorm). Pre-norm placement only; omitempty as
	// for SharedGate.
	ParallelAttention bool `json:",omitempty"`
	EncoderMoE        bool // encoder layers follow the same rule (encoder-decoder models)

	Router         RouterInput
	RouterDim      int64 // width of the dedicated token-embedding router table (defaults to DModel)
	Score          Score
	Normalize      bool    // renormalise the top-k gates to sum to one
	RouterBias     bool    // a bias on the router projection
	CapacityFactor float64 // 0 = dropless
	DroplessSkew   float64 // for dropless planning: worst-case load of one expert / mean load
	BalanceLoss    float64 // Switch-style load-balance loss coefficient
	ZLoss          float64 // router z-loss coefficient
	AuxFreeBias    float64 // auxiliary-loss-free bias update rate (0 = off)
	Groups         int     // node-limited routing: expert groups (0 = none)
	TopKGroups     int     // groups a token may use

	// RoutedScale multiplies the routed experts' combined output (DeepSeek's
	// routed_scaling_factor): the gates after any renormalisation. 0 means 1, unscaled;
	// omitempty keeps the config hash of every model without it as it was.
	RoutedScale float64 `json:",omitempty"`

	// SparsemixerEps routes with Phi-3.5-MoE's sparsemixer instead of a top-k softmax: each
	// of the top_k choices is the best remaining expert, gated by a softmax over the experts
	// within SparsemixerEps (relative) of it; 0 is off. omitempty as above.
	SparsemixerEps float64 `json:",omitempty"`

	// GateInput multiplies each chosen expert's input by its gate instead of its output, as
	// Llama 4 does (routed_in = x · sigmoid(score)); omitempty as above.
	GateInput bool `json:",omitempty"`

	// SwigluLimit > 0 makes the SwiGLU experts gpt-oss's clamped ones: the gate clamped
	// above at SwigluLimit, the up projection to ±SwigluLimit, and
	// (up + 1) · gate · σ(SwigluAlpha · gate) in place of up · silu(gate). omitempty.
	SwigluLimit float64 `json:",omitempty"`
	SwigluAlpha float64 `json:",omitempty"`
}

// RoutedScaleOrOne is the factor on the routed experts' output: RoutedScale, or 1.
func (m *MoE) RoutedScaleOrOne() float64 {
	if m.RoutedScale == 0 {
		return 1
	}
	return m.RoutedScale
}

// IsMoELayer reports whether layer i (0-based) is an MoE layer.
// With an explicit list, membership decides. Otherwise layers before FirstDense are dense
// and, counting from FirstDense, every Every-th layer is MoE, the last of each group
// (Every = 2 makes layers 1, 3, 5, ... MoE, as GShard and Switch do).
func (m *MoE) IsMoELayer(i int) bool {
	if len(m.Layers) > 0 {
		for _, l := range m.Layers {
			if l == i {
				return true
			}
		}
		return false
	}
	if i < m.FirstDense {
		return false
	}
	every := m.Every
	if every <= 1 {
		return true
	}
	return (i-m.FirstDense)%every == every-1
}

// Dropless reports whether tokens are never dropped.
func (m *MoE) Dropless() bool { return m.CapacityFactor <= 0 }
