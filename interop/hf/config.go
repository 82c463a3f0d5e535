package hf

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// Arch is a Hugging Face architecture moec imports.
type Arch string

const (
	Mixtral  Arch = "mixtral"
	Qwen2MoE Arch = "qwen2_moe"
	Qwen3MoE Arch = "qwen3_moe"
	DeepSeek Arch = "deepseek_v2" // also deepseek_v3: the same config keys
	// DeepSeekMoE is DeepSeek-MoE 16B (model_type deepseek, remote code): DeepSeek-V2's MoE
	// keys with standard multi-head attention.
	DeepSeekMoE Arch = "deepseek"
	// HunyuanMoE is Hunyuan-A13B (hunyuan_v1_moe, transformers' HunYuanMoEV1) and Hunyuan
	// is Hunyuan-Large (hunyuan, Tencent's remote code, with cross-layer attention).
	HunyuanMoE Arch = "hunyuan_v1_moe"
	Hunyuan    Arch = "hunyuan"
	PhiMoE     Arch = "phimoe" // Phi-3.5-MoE
	DBRX       Arch = "dbrx"
	Arctic     Arch = "arctic" // Snowflake Arctic (remote code): a residual MoE beside a dense FFN
	Llama4     Arch = "llama4_text"
	GptOss     Arch = "gpt_oss"
	OLMoE      Arch = "olmoe"
	Llama      Arch = "llama" // dense; also mistral, qwen2, qwen3 dense configs
)

// archOf maps config.json's model_type to the importer that reads it and the transformers
// class that loads such a checkpoint.
var archOf = map[string]struct {
	arch  Arch
	class string
}{
	"mixtral":        {Mixtral, "MixtralForCausalLM"},
	"qwen2_moe":      {Qwen2MoE, "Qwen2MoeForCausalLM"},
	"qwen3_moe":      {Qwen3MoE, "Qwen3MoeForCausalLM"},
	"deepseek_v2":    {DeepSeek, "DeepseekV2ForCausalLM"},
	"deepseek_v3":    {DeepSeek, "DeepseekV3ForCausalLM"},
	"deepseek":       {DeepSeekMoE, "DeepseekForCausalLM"},
	"hunyuan_v1_moe": {HunyuanMoE, "HunYuanMoEV1ForCausalLM"},
	"hunyuan":        {Hunyuan, "HunYuanForCausalLM"},
	"phimoe":         {PhiMoE, "PhimoeForCausalLM"},
	"dbrx":           {DBRX, "DbrxForCausalLM"},
	"arctic":         {Arctic, "ArcticForCausalLM"},
	"llama4_text":    {Llama4, "Llama4ForCausalLM"},
	"llama4":         {Llama4, "Llama4ForConditionalGeneration"},
	"gpt_oss":        {GptOss, "GptOssForCausalLM"},
	"olmoe":          {OLMoE, "OlmoeForCausalLM"},
	"llama":          {Llama, "LlamaForCausalLM"},
	"mistral":        {Llama, "MistralForCausalLM"},
	"qwen2":          {Llama, "Qwen2ForCausalLM"},
	"qwen3":          {Llama, "Qwen3ForCausalLM"},
}

// maxLayers bounds num_hidden_layers: far above any released model, low enough that a
// mistyped config cannot make the import allocate per-layer tables without end.
const maxLayers = 100_000

// spec is the model a config describes, in moec's terms, before it is written as source.
type spec struct {
	modelType, class string
	arch             Arch

	vocab, dModel, seqLen int64
	layers                int
	normEps, ropeBase     float64
	tie                   bool
	mtp                   int
	ropeScale             *ropeSpec // nil: plain rotary

	heads, kvHeads   int
	headDim          int64 // 0: d_model / heads
	qkvBias, outBias bool
	qkNorm           bool
	qkNormFull       bool // qk_norm = full: the norms span the whole projections (OLMoE)
	qkNormAfterRope  bool // the norms follow rotary positions (HunYuan)
	shareKV          int  // cross-layer attention: layers per K/V owner (0, 1: none)
	clipQKV          float64
	layerNorm        bool // LayerNorm, not RMSNorm (Phi-3.5-MoE, DBRX)
	normNoBias       bool // LayerNorms without biases (DBRX)
	headBias         bool // a bias on lm_head (Phi-3.5-MoE)
	window           int64
	fullEvery        int  // gpt-oss: every fullEvery-th layer attends fully, the others within window
	sinks            bool // a learned sink logit per head (gpt-oss)
	qLora, kvLora    int64
	nope, rope, vDim int64

	ffnHidden  int64
	activation string // swiglu or geglu
	ffnBias    bool

	moe *moeSpec

	llama4Attn *llama4Spec // nil but for Llama 4 (llama4.go)
}

type moeSpec struct {
	experts, topK int
	expertHidden  int64 // 0: ffn.hidden
	shared        int
	sharedHidden  int64 // 0: expert_hidden
	sharedGate    bool  // a sigmoid gate on the shared expert (Qwen2-MoE's shared_expert_gate)
	moeLayers     []int // the layers HF makes MoE
	score         string
	normalize     bool
	balance, z    float64
	auxFree       float64
	groups, topkG int
	routedScale   float64 // 0 or 1: unscaled
	sparsemixer   float64 // Phi-3.5-MoE's sparsemixer threshold (0: top-k softmax)
	// parallelAttention: Arctic's parallel_attn_mlp_res, the experts beside attention and
	// a dense FFN (parallel_dense) after it.
	parallelAttention bool
	gateInput         bool // Llama 4: the gate scales the chosen expert's input
	routerBias        bool
	expertBias        bool
	swigluLimit       float64 // gpt-oss's clamped SwiGLU (0: plain)
	swigluAlpha       float64 // its sigmoid's slope (gpt-oss: 1.702)
}

// readSpec reads a config into a spec, collecting every refusal in r.
func readSpec(r *reader) (*spec, error) {
	mt := r.str("model_type", "")
	entry, ok := archOf[mt]
	if !ok {
		known := make([]string, 0, len(archOf))
		for k := range archOf {
			known = append(known, k)
		}
		sort.Strings(known)
		if mt == "" {
			return nil, diag.Runtimef(diag.CodeUnknownArchitecture, "%s has no model_type: moec needs it to know the architecture (known: %s)", r.source, strings.Join(known, ", "))
		}
		e := diag.Runtimef(diag.CodeUnknownArchitecture, "%s: model_type %q is not an architecture moec imports (known: %s)", r.source, mt, strings.Join(known, ", "))
		if c, ok := diag.Closest(mt, known); ok {
			e.Suggestion = fmt.Sprintf("did you mean %q?", c)
		}
		return nil, e
	}
	s := &spec{modelType: mt, class: entry.class, arch: entry.arch}
	r.resolveAliases(mt)
	if mt == "hunyuan" {
		s.hunyuanRemoteClass(r) // Hunyuan-Large's or Hunyuan-A13B's remote code: hunyuan_class.go
	}
	if mt == "llama4" {
		// The multimodal wrapper: its language model is text_config, as Llama4ForCausalLM
		// loads it; the vision encoder and projector are no model moec imports.
		e := diag.Runtimef(diag.CodeUnknownArchitecture, "%s: model_type llama4 is Llama4ForConditionalGeneration, a vision encoder beside the language model; moec imports the language model", r.source)
		e.Suggestion = "write its text_config (model_type llama4_text, what Llama4ForCausalLM loads) to a config.json of its own and import that"
		return nil, e
	}
	if entry.arch == DBRX {
		// DBRX names its sizes its own way and nests attention and FFN settings.
		s.dbrx(r)
		return s.finish(r)
	}
	s.vocab = r.required("vocab_size")
	s.dModel = r.required("hidden_size")
	s.layers = int(r.required("num_hidden_layers"))
	if s.layers > maxLayers {
		r.bad("num_hidden_layers", "%d layers is more than moec imports (%d)", s.layers, maxLayers)
		s.layers = 0
	}
	s.heads = int(r.required("num_attention_heads"))
	s.kvHeads = int(r.integer("num_key_value_heads", int64(s.heads)))
	s.headDim = r.integer("head_dim", 0)
	s.normEps = r.float("rms_norm_eps", 1e-6)
	s.ropeBase = r.float("rope_theta", 10000)
	s.seqLen = r.integer("max_position_embeddings", 0)
	if s.seqLen == 0 {
		r.bad("max_position_embeddings", "missing: moec needs the sequence length")
	}
	// PretrainedConfig ties embeddings unless told otherwise; the classes imported here
	// (except the dense ones, which inherit that default) all default to untied.
	s.tie = r.boolean("tie_word_embeddings", entry.arch == Llama && mt != "llama")
	if act := r.str("hidden_act", "silu"); act == "silu" || act == "swish" {
		s.activation = "swiglu"
	} else if act == "gelu" {
		s.activation = "geglu" // erf GELU, as moec's
	} else {
		r.refuse("hidden_act", fmt.Sprintf("activation %q", act), "moec's gated activations are SiLU (swiglu) and erf GELU (geglu)")
		s.activation = "swiglu"
	}
	if r.boolean("is_encoder_decoder", false) {
		r.refuse("is_encoder_decoder", "an encoder-decoder model", "the architectures imported here are decoder-only")
	}
	r.zero("attention_dropout", "attention dropout")
	r.zero("hidden_dropout", "hidden dropout")
	if entry.arch != PhiMoE {
		r.zero("router_jitter_noise", "router jitter noise") // PhiMoE's is its sparsemixer threshold
	}
	if tp := r.integer("pretraining_tp", 1); tp != 1 {
		r.inexpressible("pretraining_tp", fmt.Sprintf("pretraining_tp %d slices the matmuls", tp), "results differ in rounding only, but moec computes them whole", 0)
	}
	if entry.arch != GptOss { // gpt-oss's MXFP4: gptoss.go
		r.fp8Quantization() // fine-grained FP8 (DeepSeek-V3's): fp8.go
	}
	if s.arch == Hunyuan || s.arch == HunyuanMoE {
		s.hunyuanRope(r)
	} else {
		s.ropeScaling(r)
	}
	if entry.arch != Llama4 && entry.arch != GptOss { // their layer_types: llama4.go, gptoss.go
		s.slidingWindow(r)
	}
	s.attentionBias(r)

	switch entry.arch {
	case Mixtral:
		s.ffnHidden = r.required("intermediate_size")
		s.moe = &moeSpec{
			experts: int(r.required("num_local_experts")), topK: int(r.integer("num_experts_per_tok", 2)),
			score: "softmax", normalize: true, // Mixtral renormalises its top-k softmax
			balance: r.float("router_aux_loss_coef", 0.001),
		}
		s.moe.allLayers(s.layers, 0, 1)
	case Qwen2MoE, Qwen3MoE:
		s.qwenMoE(r)
	case OLMoE:
		s.ffnHidden = r.required("intermediate_size")
		s.moe = &moeSpec{
			experts: int(r.required("num_experts")), topK: int(r.integer("num_experts_per_tok", 8)),
			score: "softmax", normalize: r.boolean("norm_topk_prob", false),
			balance: r.float("router_aux_loss_coef", 0.01), z: r.float("router_z_loss_coef", 0.001),
		}
		s.moe.allLayers(s.layers, 0, 1)
		if c := r.float("clip_qkv", 0); c > 0 { // OlmoeAttention clamps q, k and v after the norms
			s.clipQKV = c
		} else if r.present("clip_qkv") {
			r.bad("clip_qkv", "want a positive bound or null, have %v", c)
		}
		// OLMoE normalises the whole query and key projections (q_norm over
		// heads·head_dim = hidden_size, k_norm over kv_heads·head_dim): qk_norm = full.
		s.qkNorm, s.qkNormFull = true, true
	case DeepSeek, DeepSeekMoE:
		s.deepseek(r)
	case Hunyuan, HunyuanMoE:
		s.hunyuan(r)
	case PhiMoE:
		s.phimoe(r)
	case Arctic:
		s.arctic(r)
	case Llama4:
		s.llama4(r)
	case GptOss:
		s.gptOss(r)
	case Llama:
		s.ffnHidden = r.required("intermediate_size")
		if r.boolean("mlp_bias", false) {
			s.ffnBias = true
		}
		if mt == "qwen3" {
			s.qkNorm = true
		}
		if mt == "qwen2" {
			s.qkvBias = true // Qwen2 always biases Q, K and V
		}
	}
	return s.finish(r)
}

// finish reports every field nobody read and every --drop that names nothing droppable.
func (s *spec) finish(r *reader) (*spec, error) {
	r.leftovers()
	r.checkDrops()
	if len(r.issues) > 0 {
		return nil, &Error{Source: r.source, Issues: r.issues}
	}
	return s, nil
}

// ropeScaling reads rope_scaling (transformers v4) or rope_parameters (v5, which also
// holds rope_theta): both are the rotary scaling moec's rope_* keys express.
func (s *spec) ropeScaling(r *reader) {
	v4, v5 := r.take("rope_scaling"), r.take("rope_parameters")
	if v4 != nil && v5 != nil {
		r.bad("rope_parameters", "the config has both rope_scaling and rope_parameters (transformers v5's name for it); keep one")
		return
	}
	switch {
	case v5 != nil:
		theta := s.ropeBase
		s.readRope(r, "rope_parameters", v5)
		if r.present("rope_theta") && s.ropeBase != theta {
			r.bad("rope_parameters", "rope_theta %v inside it differs from the config's rope_theta %v", s.ropeBase, theta)
		}
	case v4 != nil:
		s.readRope(r, "rope_scaling", v4)
	}
}

func (s *spec) slidingWindow(r *reader) {
	use := r.boolean("use_sliding_window", true)
	w := r.integer("sliding_window", 0)
	// Qwen applies the window only from layer max_window_layers on; newer configs spell
	// the same per layer in layer_types.
	from := int(r.integer("max_window_layers", 0))
	var types []string
	if raw := r.take("layer_types"); raw != nil {
		if err := json.Unmarshal(raw, &types); err != nil {
			r.bad("layer_types", "want a list of strings, have %s", compact(raw))
		}
	}
	windowed := 0
	for _, t := range types {
		if t != "full_attention" {
			windowed++
		}
	}
	if !use || w <= 0 || w >= s.seqLen || (from >= s.layers && r.present("max_window_layers")) {
		if windowed > 0 {
			r.refuse("layer_types", fmt.Sprintf("%d layers of kind other than full_attention", windowed), "moec's layers all attend alike")
		}
		return
	}
	if len(types) > 0 && windowed < len(types) {
		// Some layers attend fully beside the windowed ones: taking the window for all
		// would be another model.
		r.refuse("layer_types", fmt.Sprintf("%d of %d layers full_attention beside a sliding window of %d", len(types)-windowed, len(types), w), "moec's window applies to every layer but for gpt-oss's alternation (attention.full_every)")
		return
	}
	if from > 0 && from < s.layers {
		r.refuse("max_window_layers", fmt.Sprintf("a sliding window of %d only from layer %d on", w, from), "moec's window applies to every layer")
		return
	}
	s.window = w
}

func (s *spec) attentionBias(r *reader) {
	if r.boolean("attention_bias", false) {
		s.qkvBias, s.outBias = true, true
	}
}

// allLayers makes every layer from first on, every every-th, an MoE layer (the rule of
// DeepSeek's moe_layer_freq and Qwen's decoder_sparse_step, expressed as HF computes it).
func (m *moeSpec) allLayers(layers, first, every int) {
	m.moeLayers = nil
	for i := first; i < layers; i++ {
		if (i-first)%every == 0 {
			m.moeLayers = append(m.moeLayers, i)
		}
	}
}

func (s *spec) qwenMoE(r *reader) {
	s.ffnHidden = r.required("intermediate_size")
	m := &moeSpec{
		experts: int(r.required("num_experts")), topK: int(r.integer("num_experts_per_tok", 4)),
		expertHidden: r.required("moe_intermediate_size"),
		score:        "softmax", normalize: r.boolean("norm_topk_prob", s.arch == Qwen3MoE),
		balance: r.float("router_aux_loss_coef", 0.001),
	}
	s.moe = m
	step := int(r.integer("decoder_sparse_step", 1))
	if step < 1 {
		r.bad("decoder_sparse_step", "must be at least 1")
		step = 1
	}
	dense := map[int64]bool{}
	for _, l := range r.ints("mlp_only_layers") {
		dense[l] = true
	}
	// Qwen: layer i is sparse when i is not in mlp_only_layers and (i+1) % step == 0.
	for i := 0; i < s.layers; i++ {
		if !dense[int64(i)] && (i+1)%step == 0 {
			m.moeLayers = append(m.moeLayers, i)
		}
	}
	if s.arch == Qwen2MoE {
		// Qwen2-MoE biases Q, K and V; transformers 5 writes the switch as qkv_bias.
		s.qkvBias = r.boolean("qkv_bias", true)
		// Qwen2-MoE's one shared expert is always scaled by sigmoid(shared_expert_gate(x)),
		// a hidden_size → 1 projection per MoE layer: shared_gate.
		if sh := r.integer("shared_expert_intermediate_size", 0); sh > 0 {
			m.shared, m.sharedHidden, m.sharedGate = 1, sh, true
		}
	} else {
		s.qkNorm = true // Qwen3 has per-head q_norm and k_norm
	}
}

func (s *spec) deepseek(r *reader) {
	s.ffnHidden = r.required("intermediate_size")
	// DeepseekV3ForCausalLM always routes on sigmoid scores with the selection bias
	// (noaux_tc), and transformers 5's DeepseekV3Config writes neither key; the published
	// V3 configs spell them out.
	defaultScore, defaultMethod := "softmax", "greedy"
	if s.modelType == "deepseek_v3" {
		defaultScore, defaultMethod = "sigmoid", "noaux_tc"
	}
	// transformers 5's DeepseekV2Config writes mlp_bias: biases on the dense and shared MLPs.
	if r.boolean("mlp_bias", false) {
		r.refuse("mlp_bias", "biases on the dense and shared MLPs", "moec's DeepSeek MLPs have no biases")
	}
	if s.arch == DeepSeek {
		s.qLora = r.integer("q_lora_rank", 0)
		s.kvLora = r.required("kv_lora_rank")
		s.nope = r.required("qk_nope_head_dim")
		s.rope = r.required("qk_rope_head_dim")
		s.vDim = r.required("v_head_dim")
		s.mtp = int(r.integer("num_nextn_predict_layers", 0))
		// The order of the rope rows in the weights, not the model's: ImportCheckpoint reads it.
		r.used["rope_interleave"] = true
		// transformers 5's DeepseekV3Config writes the query-key width it derives:
		// qk_nope_head_dim + qk_rope_head_dim, or another model.
		if qk := r.integer("qk_head_dim", s.nope+s.rope); qk != s.nope+s.rope {
			r.bad("qk_head_dim", "%d is not qk_nope_head_dim + qk_rope_head_dim = %d", qk, s.nope+s.rope)
		}
	}
	m := &moeSpec{
		experts: int(r.integer("n_routed_experts", 0)), topK: int(r.integer("num_experts_per_tok", 1)),
		expertHidden: r.integer("moe_intermediate_size", 0),
		shared:       int(r.integer("n_shared_experts", 0)),
		score:        r.str("scoring_func", defaultScore),
		normalize:    r.boolean("norm_topk_prob", false),
		balance:      r.float("aux_loss_alpha", 0.001),
	}
	if m.experts == 0 {
		r.bad("n_routed_experts", "missing: a DeepSeek model without routed experts is not an MoE model")
		return
	}
	if m.expertHidden == 0 {
		r.bad("moe_intermediate_size", "missing (required with n_routed_experts)")
	}
	if !program.Score(m.score).Known() {
		r.refuse("scoring_func", fmt.Sprintf("router score %q", m.score), "moec's router scores are "+knownScores())
		m.score = "softmax"
	}
	first := int(r.integer("first_k_dense_replace", 0))
	freq := int(r.integer("moe_layer_freq", 1))
	if freq < 1 {
		r.bad("moe_layer_freq", "must be at least 1")
		freq = 1
	}
	// DeepSeek: layer i is MoE when i >= first_k_dense_replace and i % moe_layer_freq == 0.
	for i := first; i < s.layers; i++ {
		if i%freq == 0 {
			m.moeLayers = append(m.moeLayers, i)
		}
	}
	switch method := r.str("topk_method", defaultMethod); method {
	case "greedy":
	case "group_limited_greedy", "noaux_tc":
		if g := int(r.integer("n_group", 1)); g > 1 {
			m.groups, m.topkG = g, int(r.integer("topk_group", 1))
		}
		if method == "noaux_tc" {
			// The bias update rate is a training setting config.json does not hold; 0.001 is
			// the DeepSeek-V3 report's (arXiv:2412.19437, section 4.2).
			m.auxFree = 0.001
		}
	default:
		r.refuse("topk_method", fmt.Sprintf("top-k method %q", method), "moec routes greedily, group-limited, or with the auxiliary-loss-free bias")
	}
	r.used["n_group"], r.used["topk_group"] = true, true
	if f := r.float("routed_scaling_factor", 1); f <= 0 {
		r.bad("routed_scaling_factor", "want a positive number, have %v", f)
	} else {
		m.routedScale = f
	}
	// configuration_deepseek.py (DeepSeek-MoE, V2 and V3) and transformers' DeepseekV2Config
	// take a missing seq_aux as true. moec keeps its balance loss per batch, with a note:
	// the forward pass is the same, only training's auxiliary loss differs.
	said := r.present("seq_aux")
	if r.boolean("seq_aux", true) && m.balance > 0 {
		what := "seq_aux = true"
		if !said {
			what = "seq_aux absent, which DeepSeek's configuration_deepseek.py takes as true"
		}
		r.notes = append(r.notes, what+": DeepSeek computes its balance loss per sequence; moec's balance_loss is per batch")
	}
	if s.arch == DeepSeekMoE {
		s.deepseekMoEChecks(r, m)
	}
	s.moe = m
}

// knownScores names the router scores moec computes: "softmax or sigmoid".
func knownScores() string {
	names := make([]string, 0, len(program.Scores()))
	for _, s := range program.Scores() {
		names = append(names, string(s))
	}
	return strings.Join(names, " or ")
}
