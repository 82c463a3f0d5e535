package check

import (
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// typeKind is the declared type of a key.
type typeKind int

const (
	tyInt       typeKind = iota + 1 // a plain integer; count suffixes allowed (150k)
	tyFloat                         // a plain number
	tyBool                          // true or false
	tyEnum                          // one of keyType.enums
	tyBytes                         // a size with a byte suffix
	tyRate                          // a bit or byte rate, stored as bytes/s
	tyFLOPS                         // FLOP/s
	tyString                        // a double-quoted string
	tyIntList                       // [1, 2, 3]
	tyFloatList                     // [1.0, 1.02, 2.5]
	tyCtor                          // a constructor: one of keyType.ctors
	tyName                          // a declaration name, written as an identifier or string
)

// keyType is a key's type; enums also lists the words a float key accepts (dropless) or,
// for a bool key, the words that say how it is on (qk_norm = full).
type keyType struct {
	kind  typeKind
	enums []string
	ctors []*blockSpec
}

func (t keyType) String() string {
	switch t.kind {
	case tyInt:
		return "an integer"
	case tyFloat:
		if len(t.enums) > 0 {
			return "a number or " + strings.Join(t.enums, " | ")
		}
		return "a number"
	case tyBool:
		if len(t.enums) > 0 {
			return "true, false, " + strings.Join(t.enums, " or ")
		}
		return "true or false"
	case tyEnum:
		return "one of " + strings.Join(t.enums, " | ")
	case tyBytes:
		return "a size in bytes (e.g. 16GiB)"
	case tyRate:
		return "a rate (e.g. 200Gbps or 25GB/s)"
	case tyFLOPS:
		return "FLOP/s (e.g. 312TFLOPS)"
	case tyString:
		return "a string"
	case tyIntList:
		return "a list of integers"
	case tyFloatList:
		return "a list of numbers"
	case tyCtor:
		names := make([]string, len(t.ctors))
		for i, c := range t.ctors {
			names[i] = c.kind
		}
		return "one of " + strings.Join(names, " | ")
	case tyName:
		return "a name"
	}
	return "a value"
}

// unitHint is the suffix a diagnostic suggests for a unitless number of this type.
func (t keyType) unitHint() string {
	switch t.kind {
	case tyBytes:
		return "GiB"
	case tyRate:
		return "Gbps"
	case tyFLOPS:
		return "TFLOPS"
	}
	return ""
}

// limit is a range rule on a number.
type limit int

const (
	anyValue     limit = iota
	positive           // > 0
	nonNegative        // >= 0
	probability        // in (0, 1]
	fraction           // in [0, 1]
	openFraction       // in [0, 1)
	atLeastOne         // >= 1 (floats)
)

func (l limit) String() string {
	switch l {
	case positive:
		return "must be > 0"
	case nonNegative:
		return "must be >= 0"
	case probability:
		return "must be in (0, 1]"
	case fraction:
		return "must be in [0, 1]"
	case openFraction:
		return "must be in [0, 1)"
	case atLeastOne:
		return "must be >= 1"
	}
	return ""
}

// computedDefault computes a default that no expression can state (a catalog entry, a
// rule that depends on whether a section exists). It returns the value and a note saying
// where it came from; ok is false when the default cannot be computed.
type computedDefault func(r *resolver, s *scope) (v value, from string, ok bool)

// keySpec is one key of a block: its type, default and range.
type keySpec struct {
	name     string
	typ      keyType
	def      string          // default as an expression over other keys ("" = see required/optional)
	defFn    computedDefault // instead of def
	required bool            // no default: the user must write it
	optional bool            // no default: absent unless written (no provenance)
	limit    limit
	oneOf    []int64 // allowed integer values, when only a few are meaningful
	// defCode is the diagnostic code for a default that cannot be evaluated; it names
	// the rule the user broke (heads dividing d_model) rather than the key's type.
	defCode diag.Code
	// rangeCode replaces E0221 for range errors that have a rule of their own.
	rangeCode diag.Code
	// rangeHelp, when set, is the suggestion a range error carries.
	rangeHelp string
	// max, when > 0, is the largest value the key accepts, and maxWhy says why (see the
	// size bounds below).
	max    int64
	maxWhy string
	doc    string
}

// Upper bounds on the sizes that the compiler turns into per-item work: a count entry per
// layer, a loop over experts or heads, a placement entry per rank, in the counter, the
// planner, code generation and the exporters. Each lies orders of magnitude above every
// published model, so only a slip (100M written for 100) reaches one, and it gets a
// positioned error instead of running out of memory minutes later. Sizes that enter only
// arithmetic (d_model, hidden) have no bound: the parameter count is checked for overflow
// instead (countModel).
const (
	// DeepSeek-V3 has 61 layers, GPT-3 96; the deepest trained transformers (DeepNet) 1,000.
	maxLayers = 100_000
	whyLayers = "the compiler keeps one entry per layer; the deepest trained transformers have about 1,000 layers"
	// Switch-C has 2,048 experts, HunYuan-NLP 1T 1,536, DeepSeek-V3 256; PEER's product-key
	// experts, the most published, are 1,048,576.
	maxExperts = 10_000_000
	whyExperts = "the compiler and the exporters handle experts one by one; the largest published expert counts are about 1M (PEER)"
	// DeepSeek-V3 and the other wide models use 128 query heads.
	maxHeads = 100_000
	whyHeads = "the planner and the kernels work head by head; published models use at most a few hundred heads"
	// The largest vocabularies are about 256k entries (Gemma).
	maxVocab = 1_000_000_000
	whyVocab = "published vocabularies have at most about 256k entries"
	// The longest published contexts are about 10M tokens.
	maxPositions = 1_000_000_000
	whyPositions = "the longest published contexts are about 10M tokens"
	// The largest clusters built have about 100k devices; GB200 NVL576 puts 576 in one system.
	maxNodes = 1_000_000
	whyNodes = "the largest clusters built have about 100k devices"
	maxGPUs  = 4096
	whyGPUs  = "the largest single systems (NVL576) hold 576 devices"
	// The CPU planner lays out every rank's expert and data groups (ranks² entries).
	maxRanks = 4096
	whyRanks = "the CPU planner lays out every rank's groups (ranks² entries), and the largest CPU hosts have a few hundred cores"
)

// atMost sets k's upper bound.
func atMost(max int64, why string, k *keySpec) *keySpec { k.max, k.maxWhy = max, why; return k }

// blockSpec is the schema of one block kind or constructor.
type blockSpec struct {
	kind       string
	keys       []*keySpec
	sections   []string // nested unnamed blocks, at most one each (attention, ffn, moe)
	named      []string // nested named blocks, any number (stage, variant)
	positional []string // constructor parameters in positional order
	headerName bool     // NAME required in the header
	headerOn   bool     // "on CLUSTER" required
	extends    bool     // "extends BASE" allowed
	from       bool     // "from OTHER" allowed
}

func (b *blockSpec) key(name string) *keySpec {
	for _, k := range b.keys {
		if k.name == name {
			return k
		}
	}
	return nil
}

func (b *blockSpec) keyNames() []string {
	names := make([]string, len(b.keys))
	for i, k := range b.keys {
		names[i] = k.name
	}
	return names
}

func (b *blockSpec) hasSection(kind string) bool {
	for _, s := range b.sections {
		if s == kind {
			return true
		}
	}
	return false
}

func (b *blockSpec) hasNamed(kind string) bool {
	for _, s := range b.named {
		if s == kind {
			return true
		}
	}
	return false
}

// schema holds every block table. It is built fresh per Check (no package state).
type schema struct {
	blocks   map[string]*blockSpec // by kind, for top-level, sections and named nested blocks
	topLevel []string              // declaration kinds in the order Explain lists them
}

// Helpers that keep the tables below readable.
func integer(name, def string, l limit, doc string) *keySpec {
	return &keySpec{name: name, typ: keyType{kind: tyInt}, def: def, limit: l, doc: doc}
}
func float(name, def string, l limit, doc string) *keySpec {
	return &keySpec{name: name, typ: keyType{kind: tyFloat}, def: def, limit: l, doc: doc}
}
func boolean(name, def, doc string) *keySpec {
	return &keySpec{name: name, typ: keyType{kind: tyBool}, def: def, doc: doc}
}
func enum(name, def string, values []string, doc string) *keySpec {
	return &keySpec{name: name, typ: keyType{kind: tyEnum, enums: values}, def: def, doc: doc}
}
func required(k *keySpec) *keySpec { k.required = true; return k }
func optional(k *keySpec) *keySpec { k.optional = true; return k }

func newSchema() *schema {
	s := &schema{blocks: map[string]*blockSpec{}, topLevel: []string{"model", "cluster", "train", "serve", "compress", "experiment"}}
	add := func(b *blockSpec) { s.blocks[b.kind] = b }
	activations := []string{"relu", "gelu", "silu", "swiglu", "geglu"}

	add(&blockSpec{kind: "model", headerName: true, extends: true, sections: []string{"attention", "ffn", "moe"}, keys: []*keySpec{
		atMost(maxVocab, whyVocab, required(integer("vocab", "", positive, "vocabulary size"))),
		atMost(maxVocab, whyVocab, integer("vocab_pad_to", "1", positive, "pad embedding rows to a multiple of this")),
		required(integer("d_model", "", positive, "hidden size")),
		atMost(maxLayers, whyLayers, required(integer("layers", "", positive, "decoder layers"))),
		atMost(maxLayers, whyLayers, integer("encoder_layers", "0", nonNegative, "encoder layers")),
		atMost(maxPositions, whyPositions, required(integer("seq_len", "", positive, "sequence length"))),
		enum("norm", "rmsnorm", []string{"rmsnorm", "layernorm"}, "normalisation"),
		float("norm_eps", "1e-5", positive, "norm epsilon"),
		enum("norm_placement", "pre", []string{"pre", "post", "sandwich"}, "where norms sit"),
		boolean("final_norm", "true", "norm before the output head"),
		enum("position", "rotary", []string{"rotary", "learned", "none", "relative"}, "position encoding"),
		float("rope_base", "10000", positive, "rotary base"),
		optional(enum("rope_scaling", "", ropeScalingNames(), "rotary scaling beyond the pretrained context")),
		optional(float("rope_factor", "", atLeastOne, "rotary scaling: context extension factor")),
		atMost(maxPositions, whyPositions, optional(integer("rope_original_seq_len", "", positive, "rotary scaling: the pretrained context (yarn, llama3)"))),
		optional(float("rope_beta_fast", "", positive, "yarn: rotations bounding the ramp's fast end")),
		optional(float("rope_beta_slow", "", positive, "yarn: rotations bounding the ramp's slow end")),
		optional(float("rope_mscale", "", nonNegative, "yarn: DeepSeek's mscale (0 = unset)")),
		optional(float("rope_mscale_all_dim", "", nonNegative, "yarn: DeepSeek's mscale_all_dim (0 = unset)")),
		optional(float("rope_attention_factor", "", nonNegative, "yarn: factor on cos and sin (0 = derived from rope_factor)")),
		optional(boolean("rope_truncate", "", "yarn: round the ramp's bounds to whole dimensions")),
		optional(&keySpec{name: "rope_short_factor", typ: keyType{kind: tyFloatList}, doc: "longrope: per-pair factors up to the pretrained context"}),
		optional(&keySpec{name: "rope_long_factor", typ: keyType{kind: tyFloatList}, doc: "longrope: per-pair factors beyond it"}),
		optional(float("rope_low_freq_factor", "", positive, "llama3: low-frequency band limit")),
		optional(float("rope_high_freq_factor", "", positive, "llama3: high-frequency band limit")),
		atMost(maxPositions, whyPositions, integer("max_position", "seq_len", positive, "learned position rows")),
		boolean("tie_embeddings", "false", "output head shares the embedding"),
		optional(boolean("norm_bias", "", "LayerNorm biases (norm = layernorm; DBRX has none)")),
		optional(boolean("head_bias", "", "a bias on the output head (Phi-3.5-MoE)")),
		atMost(maxLayers, whyLayers, integer("mtp_depth", "0", nonNegative, "multi-token-prediction modules")),
	}})
	add(&blockSpec{kind: "attention", keys: []*keySpec{
		atMost(maxHeads, whyHeads, required(integer("heads", "", positive, "query heads"))),
		atMost(maxHeads, whyHeads, integer("kv_heads", "heads", positive, "key/value heads")),
		{name: "head_dim", typ: keyType{kind: tyInt}, def: "d_model / heads", limit: positive, defCode: diag.CodeHeadsDivide, doc: "per-head dimension"},
		integer("q_lora_rank", "0", nonNegative, "MLA query low rank"),
		integer("kv_lora_rank", "0", nonNegative, "MLA key/value latent rank"),
		integer("qk_nope_head_dim", "0", nonNegative, "MLA non-rotary query/key dim"),
		integer("qk_rope_head_dim", "0", nonNegative, "MLA rotary query/key dim"),
		integer("v_head_dim", "0", nonNegative, "MLA value dim"),
		// true is per_head: one head_dim-wide norm shared by all heads (Qwen3); full norms
		// the whole projections, heads·head_dim and kv_heads·head_dim wide (OLMoE).
		{name: "qk_norm", typ: keyType{kind: tyBool, enums: []string{"per_head", "full"}}, def: "false",
			doc: "norms on queries and keys: per head (true, per_head) or over the whole projection (full)"},
		optional(float("clip_qkv", "", positive, "clamp the Q, K and V projections to [-clip_qkv, clip_qkv] (DBRX)")),
		optional(boolean("qk_norm_after_rope", "", "apply the q/k norms to the rotated queries and keys, one key norm per layer (HunYuan)")),
		optional(integer("full_every", "", positive, "every Nth layer, the last of each group, attends fully; the others within window (gpt-oss)")),
		optional(integer("nope_every", "", positive, "every Nth layer, the last of each group, has no rotary positions (Llama 4)")),
		optional(integer("chunk", "", positive, "rotary layers attend within aligned chunks of this many positions (Llama 4)")),
		optional(boolean("qk_l2_norm", "", "RMS-normalise rotated queries and keys per head without scales, in rotary layers (Llama 4)")),
		optional(float("nope_temperature", "", positive, "query temperature of layers without rotary positions (Llama 4's attn_scale)")),
		optional(integer("nope_temperature_floor", "", positive, "positions per temperature step (Llama 4's floor_scale)")),
		boolean("talking_heads", "false", "head-mixing matrices"),
		float("share_weights", "1", probability, "probability a layer recomputes attention weights"),
		integer("share_kv", "1", positive, "adjacent layers sharing K/V projections"),
		boolean("sinks", "false", "learned attention sinks"),
		integer("window", "0", nonNegative, "sliding window"),
		boolean("bias", "false", "bias on Q/K/V and output"),
		boolean("qkv_bias", "bias", "bias on Q/K/V"),
		boolean("out_bias", "bias", "bias on the output projection"),
	}})
	add(&blockSpec{kind: "ffn", keys: []*keySpec{
		integer("hidden", "4 * d_model", positive, "FFN width"),
		enum("activation", "gelu", activations, "activation"),
		boolean("bias", "false", "FFN biases"),
	}})
	add(&blockSpec{kind: "moe", keys: []*keySpec{
		atMost(maxExperts, whyExperts, required(integer("experts", "", positive, "routed experts"))),
		integer("top_k", "1", positive, "experts per token"),
		integer("expert_hidden", "ffn.hidden", positive, "each expert's width"),
		enum("activation", "ffn.activation", activations, "expert activation"),
		boolean("expert_bias", "false", "expert biases"),
		atMost(maxExperts, whyExperts, integer("shared_experts", "0", nonNegative, "always-on experts")),
		integer("shared_hidden", "expert_hidden", positive, "each shared expert's width"),
		boolean("shared_gate", "false", "a learned sigmoid gate per token on the shared experts' output"),
		integer("every", "1", positive, "MoE in every Nth layer"),
		integer("first_dense", "0", nonNegative, "leading dense layers"),
		{name: "layers", typ: keyType{kind: tyIntList}, def: "[]", doc: "explicit MoE layers"},
		boolean("parallel_dense", "false", "dense FFN in parallel with the MoE"),
		optional(boolean("parallel_attention", "", "experts read the layer input beside attention; the dense FFN gets its own norm (Arctic)")),
		boolean("encoder", "encoder_layers > 0", "encoder layers follow the same rule"),
		enum("router", "hidden", []string{"hidden", "token_embedding"}, "what the router reads"),
		integer("router_dim", "d_model", positive, "token-embedding router width"),
		enum("score", string(program.Softmax), scoreNames(), "router score"),
		boolean("normalize", "top_k > 1", "renormalise the top-k gates"),
		boolean("router_bias", "false", "router bias"),
		{name: "capacity_factor", typ: keyType{kind: tyFloat, enums: []string{"dropless"}}, def: "1.25", limit: positive, doc: "expert capacity / mean load"},
		float("dropless_skew", "2.0", atLeastOne, "worst expert load / mean load"),
		float("balance_loss", "0.01", nonNegative, "load-balance loss coefficient"),
		float("z_loss", "0", nonNegative, "router z-loss coefficient"),
		float("aux_free_bias", "0", nonNegative, "auxiliary-loss-free bias update rate"),
		integer("groups", "0", nonNegative, "expert groups for node-limited routing"),
		integer("topk_groups", "0", nonNegative, "groups a token may use"),
		optional(float("sparsemixer_eps", "", positive, "route with Phi-3.5-MoE's sparsemixer at this threshold")),
		optional(float("swiglu_limit", "", positive, "gpt-oss's clamped SwiGLU experts at this limit")),
		optional(float("swiglu_alpha", "", positive, "the sigmoid's slope in gpt-oss's clamped SwiGLU [1.702]")),
		optional(boolean("gate_input", "", "the gate multiplies each chosen expert's input, not its output (Llama 4)")),
		optional(float("routed_scale", "", positive, "factor on the routed experts' combined output (routed_scaling_factor)")),
	}})

	catalogKey := func(name string, kind typeKind, doc string) *keySpec {
		return &keySpec{name: name, typ: keyType{kind: kind}, defFn: catalogDefault(name), limit: positive, doc: doc}
	}
	add(&blockSpec{kind: "cluster", headerName: true, keys: []*keySpec{
		atMost(maxNodes, whyNodes, integer("nodes", "1", positive, "nodes")),
		atMost(maxGPUs, whyGPUs, integer("gpus_per_node", "1", positive, "devices per node")),
		required(&keySpec{name: "gpu", typ: keyType{kind: tyName}, doc: "device catalog entry"}),
		catalogKey("gpu_memory", tyBytes, "device memory"),
		catalogKey("peak_flops", tyFLOPS, "dense peak FLOP/s (overrides every precision)"),
		catalogKey("hbm_bandwidth", tyRate, "device memory bandwidth"),
		catalogKey("intra_link", tyRate, "device-to-peer bandwidth, one direction"),
		catalogKey("host_link", tyRate, "host-device bandwidth, one direction"),
		{name: "gpu_reserve", typ: keyType{kind: tyBytes}, defFn: catalogDefault("gpu_reserve"), limit: nonNegative, doc: "framework reserve per device"},
		required(&keySpec{name: "host_memory", typ: keyType{kind: tyBytes}, limit: positive, doc: "host memory per node"}),
		float("host_usable", "0.8", probability, "fraction of host memory for model states"),
		{name: "network", typ: keyType{kind: tyRate}, def: "0Gbps", limit: nonNegative, doc: "inter-node bandwidth per node (0 = single node)"},
		float("net_latency", "5e-6", nonNegative, "inter-node latency in seconds"),
		{name: "nvme", typ: keyType{kind: tyBytes}, def: "0GB", limit: nonNegative, doc: "NVMe per node"},
		{name: "nvme_bandwidth", typ: keyType{kind: tyRate}, def: "0GB/s", limit: nonNegative, doc: "NVMe bandwidth per node"},
		atMost(maxRanks, whyRanks, integer("ranks", "0", nonNegative, "local CPU ranks")),
		float("price_per_gpu_hour", "0", nonNegative, "price per device hour"),
	}})

	optimizerKeys := func(wd string) []*keySpec {
		return []*keySpec{
			float("lr", "3e-4", positive, "peak learning rate"),
			float("min_lr", "lr / 10", nonNegative, "floor of the schedule"),
			float("weight_decay", wd, nonNegative, "decoupled weight decay"),
			float("beta1", "0.9", openFraction, "first-moment decay"),
			float("beta2", "0.95", openFraction, "second-moment decay"),
			float("eps", "1e-8", positive, "denominator epsilon"),
			integer("warmup", "0", nonNegative, "warmup steps"),
			enum("schedule", "cosine", []string{"cosine", "constant", "linear"}, "learning-rate schedule"),
			float("clip", "1.0", nonNegative, "gradient-norm clip (0 = none)"),
		}
	}
	adamw := &blockSpec{kind: "adamw", keys: optimizerKeys("0.1"), positional: []string{"lr"}}
	adam := &blockSpec{kind: "adam", keys: optimizerKeys("0"), positional: []string{"lr"}}
	sgd := &blockSpec{kind: "sgd", positional: []string{"lr"}, keys: []*keySpec{
		float("lr", "0.1", positive, "peak learning rate"),
		float("min_lr", "lr / 10", nonNegative, "floor of the schedule"),
		float("weight_decay", "0", nonNegative, "weight decay"),
		float("momentum", "0", openFraction, "momentum (stored as beta1)"),
		integer("warmup", "0", nonNegative, "warmup steps"),
		enum("schedule", "cosine", []string{"cosine", "constant", "linear"}, "learning-rate schedule"),
		float("clip", "1.0", nonNegative, "gradient-norm clip (0 = none)"),
	}}
	zero := &blockSpec{kind: "zero", positional: []string{"stage", "offload"}, keys: []*keySpec{
		{name: "stage", typ: keyType{kind: tyInt}, def: "1", oneOf: []int64{0, 1, 2, 3}, rangeCode: diag.CodeBadMemory, doc: "ZeRO stage"},
		enum("offload", "none", []string{"none", "cpu", "nvme"}, "where optimizer states live"),
		optional(&keySpec{name: "bucket", typ: keyType{kind: tyBytes}, limit: positive, rangeCode: diag.CodeBadMemory,
			rangeHelp: "write a size such as bucket = 25MiB (PyTorch DDP's default), or leave bucket out for the default",
			doc:       "data-parallel gradient all-reduce bucket (ZeRO 0 and 1) [25MiB, at least 4 buckets per group]"}),
	}}
	unified := &blockSpec{kind: "unified_cache", positional: []string{"page", "eviction"}, keys: []*keySpec{
		{name: "page", typ: keyType{kind: tyBytes}, def: "4MiB", limit: positive, doc: "cache page size"},
		enum("eviction", "lru", []string{"lru", "lfu", "fifo"}, "eviction policy"),
	}}
	copyGrow := &blockSpec{kind: "copy", positional: []string{"noise"}, keys: []*keySpec{
		float("noise", "0", nonNegative, "relative noise added to copies"),
	}}
	// random starts new experts from the model's initialiser: it takes no arguments.
	randomGrow := &blockSpec{kind: "random"}
	for _, c := range []*blockSpec{adamw, adam, sgd, zero, unified, copyGrow, randomGrow} {
		add(c)
	}

	add(&blockSpec{kind: "train", headerName: true, headerOn: true, named: []string{"stage"}, keys: []*keySpec{
		required(integer("tokens_per_batch", "", positive, "global batch in tokens")),
		integer("micro_batch", "0", nonNegative, "sequences per micro-batch (0 = planner)"),
		atMost(maxPositions, whyPositions, integer("seq_len", "model.seq_len", positive, "training sequence length")),
		enum("precision", "bf16", []string{"fp32", "bf16", "fp16"}, "training precision"),
		{name: "optimizer", typ: keyType{kind: tyCtor, ctors: []*blockSpec{adamw, adam, sgd}}, def: "adamw", doc: "optimizer"},
		{name: "memory", typ: keyType{kind: tyCtor, ctors: []*blockSpec{zero, unified}}, def: "zero(1)", doc: "memory strategy"},
		enum("recompute", "selective", []string{"none", "selective", "full"}, "activation recomputation"),
		required(&keySpec{name: "data", typ: keyType{kind: tyString}, doc: "training text glob"}),
		{name: "val_data", typ: keyType{kind: tyString}, def: `""`, doc: "validation text glob"},
		{name: "tokenizer", typ: keyType{kind: tyString}, def: `"bytes"`, doc: `token ids of the text: "bytes", or a Hugging Face tokenizer.json (a file, or a folder holding one)`},
		integer("seed", "1234", nonNegative, "random seed"),
		integer("checkpoint_every", "0", nonNegative, "steps between checkpoints (0 = end only)"),
	}})
	add(&blockSpec{kind: "stage", headerName: true, from: true, keys: []*keySpec{
		{name: "experts", typ: keyType{kind: tyInt}, defFn: stageExpertsDefault, limit: positive, max: maxExperts, maxWhy: whyExperts, doc: "routed experts in this stage"},
		integer("top_k", "0", nonNegative, "experts per token (0 = model's)"),
		optional(&keySpec{name: "grow", typ: keyType{kind: tyCtor, ctors: []*blockSpec{copyGrow, randomGrow}}, doc: "how new experts start"}),
		integer("tokens", "0", nonNegative, "token budget"),
		integer("steps", "0", nonNegative, "step count (0 = tokens / tokens_per_batch)"),
		float("lr", "0", nonNegative, "learning rate (0 = the optimizer's)"),
		// A distill stage's (`stage NAME distill from TEACHER`): compiler/check's distill.go.
		// Optional: a stage that does not distill has none (their defaults, when a distill
		// stage does not write them, are program.DefaultDistill*).
		optional(&keySpec{name: "temperature", typ: keyType{kind: tyFloat}, limit: positive, rangeCode: diag.CodeDistillTemperature, doc: "distill: softmax temperature of the soft targets [2]"}),
		optional(&keySpec{name: "soft_weight", typ: keyType{kind: tyFloat}, limit: nonNegative, rangeCode: diag.CodeDistillWeights, doc: "distill: weight of T²·KL(teacher ‖ student) [0.5]"}),
		optional(&keySpec{name: "hard_weight", typ: keyType{kind: tyFloat}, limit: nonNegative, rangeCode: diag.CodeDistillWeights, doc: "distill: weight of the labels' cross-entropy [0.5]"}),
		optional(&keySpec{name: "model", typ: keyType{kind: tyName}, doc: "distill: the student's model (default: the train's, at the stage's experts)"}),
		optional(&keySpec{name: "init", typ: keyType{kind: tyEnum, enums: []string{"random", "teacher"}}, doc: "distill: the student's start: its own initialisation, or the teacher's tensors of the same name and shape [random]"}),
	}})
	add(&blockSpec{kind: "serve", headerName: true, headerOn: true, keys: []*keySpec{
		enum("precision", "fp16", []string{"fp32", "bf16", "fp16", "fp8", "int8", "int4"}, "serving precision"),
		integer("batch", "1", positive, "concurrent sequences"),
		atMost(maxPositions, whyPositions, integer("context", "model.seq_len", positive, "KV-cache tokens per sequence")),
		enum("layout", "auto", []string{"auto", "expert", "tensor_pipeline"}, "parallel layout"),
		{name: "stage", typ: keyType{kind: tyName}, def: `""`, doc: "train stage whose model is served"},
		boolean("compressed", "false", "plan the model's compress block: its quantised bytes and kept experts"),
	}})
	add(&blockSpec{kind: "compress", headerName: true, keys: []*keySpec{
		{name: "distill_into", typ: keyType{kind: tyName}, def: `""`, doc: "student model"},
		{name: "quantize", typ: keyType{kind: tyInt}, def: "0", oneOf: []int64{0, 4, 8}, doc: "weight bits (0 = none)"},
		float("prune_experts", "0", openFraction, "fraction of experts pruned"),
		enum("experts", "auto", quantSchemes(), "routed experts' weights (auto: as quantize says)"),
		enum("dense", "auto", quantSchemes(), "attention, dense and shared FFN weights (auto: as quantize says)"),
		enum("embed", "auto", quantSchemes(), "token embedding and a tied head (auto: as quantize says)"),
		enum("head", "auto", quantSchemes(), "untied head (auto: as quantize says)"),
		{name: "group", typ: keyType{kind: tyInt}, def: "128", oneOf: []int64{32, 64, 128}, doc: "int4: input columns per scale"},
		integer("keep_experts", "0", nonNegative, "experts kept per MoE layer (0 = prune_experts', else all)"),
		enum("prune_by", "frequency", []string{"frequency", "gate_mass"}, "how kept experts are ranked over the calibration text"),
		{name: "calibration", typ: keyType{kind: tyString}, def: `""`, doc: "text whose routing chooses the experts kept"},
	}})
	add(&blockSpec{kind: "experiment", headerName: true, named: []string{"baseline", "variant"}, keys: []*keySpec{
		required(&keySpec{name: "train", typ: keyType{kind: tyName}, doc: "train declaration (its model's name)"}),
		{name: "stage", typ: keyType{kind: tyName}, def: `""`, doc: "stage to run (\"\" = the whole curriculum)"},
		integer("tokens", "0", nonNegative, "token budget per run (0 = the stage's)"),
		{name: "seeds", typ: keyType{kind: tyIntList}, def: "[1]", doc: "seeds, one run each"},
		enum("equal", "tokens", []string{"tokens", "flops"}, "what every arm gets as much of as the baseline: tokens or training FLOPs"),
	}})
	return s
}

// quantSchemes are the weight formats a compress block chooses per kind of matrix.
func quantSchemes() []string { return []string{"auto", "fp32", "int8", "int4"} }

// scoreNames are the router score functions moec computes (program.Scores), as the
// language spells them.
func scoreNames() []string {
	var out []string
	for _, s := range program.Scores() {
		out = append(out, string(s))
	}
	return out
}

// ropeScalingNames are the rotary scalings (program.RopeTypes) and none.
func ropeScalingNames() []string {
	out := []string{"none"}
	for _, t := range program.RopeTypes() {
		out = append(out, string(t))
	}
	return out
}
