package hf

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Layout is a tensor naming scheme of a transformers class that moec's runtime can carry
// weights for, or moec's own.
type Layout string

const (
	LayoutLlama    Layout = "llama"       // LlamaForCausalLM: dense
	LayoutQwen3    Layout = "qwen3"       // Qwen3ForCausalLM: dense with per-head q/k norms
	LayoutMixtral  Layout = "mixtral"     // MixtralForCausalLM
	LayoutQwen3MoE Layout = "qwen3_moe"   // Qwen3MoeForCausalLM: experts under mlp.
	LayoutOlmoe    Layout = "olmoe"       // OlmoeForCausalLM: experts under mlp., whole-projection q/k norms
	LayoutQwen2MoE Layout = "qwen2_moe"   // Qwen2MoeForCausalLM: experts under mlp., one gated shared expert
	LayoutArctic   Layout = "arctic"      // ArcticForCausalLM (Snowflake's remote code): a residual MoE beside a dense FFN
	LayoutGptOss   Layout = "gpt_oss"     // GptOssForCausalLM: interleaved fused experts, biases, sinks (gptoss_weights.go)
	LayoutLlama4   Layout = "llama4_text" // Llama4ForCausalLM: fused experts, adjacent rotary pairs (llama4_weights.go)
	LayoutDeepSeek Layout = "deepseek_v3" // DeepseekV3ForCausalLM: latent attention, one fused shared MLP (deepseek_weights.go)
	// HunYuanMoEV1ForCausalLM (Hunyuan-A13B) and HunYuanForCausalLM (Hunyuan-Large, Tencent's
	// remote code): q/k norms after rotary positions, a shared MLP (hunyuan_weights.go)
	LayoutHunyuanMoE Layout = "hunyuan_v1_moe"
	LayoutHunyuan    Layout = "hunyuan"
	LayoutDbrx       Layout = "dbrx"   // DbrxForCausalLM: fused Wqkv and experts, LayerNorms without biases (dbrx_weights.go)
	LayoutPhimoe     Layout = "phimoe" // PhimoeForCausalLM: Mixtral's names, biased LayerNorms, sparsemixer (phimoe_weights.go)
	LayoutMoec       Layout = "moec"   // moec's names; no transformers class
)

// classOf is the transformers class of each layout.
var classOf = map[Layout]string{
	LayoutLlama: "LlamaForCausalLM", LayoutQwen3: "Qwen3ForCausalLM",
	LayoutMixtral: "MixtralForCausalLM", LayoutQwen3MoE: "Qwen3MoeForCausalLM",
	LayoutOlmoe: "OlmoeForCausalLM", LayoutQwen2MoE: "Qwen2MoeForCausalLM",
	LayoutArctic: "ArcticForCausalLM", LayoutLlama4: "Llama4ForCausalLM",
	LayoutGptOss: "GptOssForCausalLM", LayoutDeepSeek: "DeepseekV3ForCausalLM",
	LayoutHunyuanMoE: "HunYuanMoEV1ForCausalLM", LayoutHunyuan: "HunYuanForCausalLM",
	LayoutDbrx: "DbrxForCausalLM", LayoutPhimoe: "PhimoeForCausalLM",
	LayoutDeepSeekMoE: "DeepseekForCausalLM",
}

// moecNames rewrites between moec's names (runtime/nn, Mixtral-style block_sparse_moe) and
// the names of the classes that keep their experts under mlp. (Qwen3-MoE, OLMoE,
// Qwen2-MoE). Dense layers' mlp.gate_proj etc. are the same in all of them. Qwen2-MoE's one
// shared expert is moec's shared_experts.0 and its shared_expert_gate keeps its name.
var (
	qwenExpert = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.(gate\.weight|experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight)$`)
	moecExpert = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.(gate\.weight|experts\.\d+\.(w1|w3|w2)\.weight)$`)
	qwenShared = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.(shared_expert\.(gate_proj|up_proj|down_proj)\.weight|shared_expert_gate\.weight)$`)
	moecShared = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.(shared_experts\.0\.(w1|w3|w2)\.weight|shared_expert_gate\.weight)$`)
	expertOf   = regexp.MustCompile(`^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.`)
)

var (
	qwenToMoec = strings.NewReplacer("gate_proj", "w1", "up_proj", "w3", "down_proj", "w2")
	moecToQwen = strings.NewReplacer(".w1.", ".gate_proj.", ".w3.", ".up_proj.", ".w2.", ".down_proj.")
	// The shared expert's projections: shared_expert.gate_proj is shared_experts.0.w1.
	qwenSharedToMoec = strings.NewReplacer("shared_expert.gate_proj.", "shared_experts.0.w1.", "shared_expert.up_proj.", "shared_experts.0.w3.", "shared_expert.down_proj.", "shared_experts.0.w2.")
	moecSharedToQwen = strings.NewReplacer("shared_experts.0.w1.", "shared_expert.gate_proj.", "shared_experts.0.w3.", "shared_expert.up_proj.", "shared_experts.0.w2.", "shared_expert.down_proj.")
)

// expertsUnderMLP reports whether layout l keeps its router and experts under mlp.
func expertsUnderMLP(l Layout) bool {
	return l == LayoutQwen3MoE || l == LayoutOlmoe || l == LayoutQwen2MoE
}

// toMoec returns the moec name of a tensor of layout l.
func toMoec(l Layout, name string) string {
	if l == LayoutArctic {
		return arcticToMoec(name)
	}
	if l == LayoutDeepSeek || l == LayoutDeepSeekMoE {
		return deepseekNameToMoec(name)
	}
	if l == LayoutHunyuanMoE || l == LayoutHunyuan {
		return hunyuanToMoec(name)
	}
	if l == LayoutGptOss {
		return gptOssRouter.ReplaceAllString(name, "${1}block_sparse_moe.gate.")
	}
	if !expertsUnderMLP(l) {
		return name
	}
	if m := qwenExpert.FindStringSubmatch(name); m != nil {
		return m[1] + "block_sparse_moe." + qwenToMoec.Replace(m[2])
	}
	if m := qwenShared.FindStringSubmatch(name); m != nil && l == LayoutQwen2MoE {
		return m[1] + "block_sparse_moe." + qwenSharedToMoec.Replace(m[2])
	}
	return name
}

// fromMoec returns the name layout l gives moec's tensor name of model m.
func fromMoec(l Layout, m *program.Model, name string) string {
	if l == LayoutArctic {
		return arcticFromMoec(m, name)
	}
	if l == LayoutHunyuanMoE || l == LayoutHunyuan {
		return hunyuanFromMoec(name)
	}
	if !expertsUnderMLP(l) {
		return name
	}
	if m := moecExpert.FindStringSubmatch(name); m != nil {
		return m[1] + "mlp." + moecToQwen.Replace(m[2])
	}
	if m := moecShared.FindStringSubmatch(name); m != nil && l == LayoutQwen2MoE {
		return m[1] + "mlp." + moecSharedToQwen.Replace(m[2])
	}
	return name
}

// shape is a tensor's name and dimensions.
type shape struct {
	name string
	dims []int
}

// expected lists the tensors a checkpoint of m has (moec's names, which fromMoec renames
// for a layout), in the order transformers' state dict has them: the parameter walker's
// list (compiler/params), which is the runtime's and, for every model layoutFor gives a
// transformers layout, that class's order. The layout tests hold it to a list written
// from the transformers classes.
func expected(m *program.Model) ([]shape, error) {
	ps, err := params.Walk(m)
	if err != nil {
		return nil, err
	}
	out := make([]shape, len(ps))
	for i, p := range ps {
		out[i] = shape{p.Name, p.Shape}
	}
	return out, nil
}

// layoutFor chooses the transformers layout that holds m exactly, or LayoutMoec and the
// features that none of the classes moec writes has.
func layoutFor(m *program.Model) (Layout, []string) {
	if candidate, unmet := llama4LayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutLlama4, nil
		}
		return LayoutMoec, []string{"gates on the experts' inputs (gate_input) are Llama 4's, and Llama4ForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	if candidate, unmet := deepseekLayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutDeepSeek, nil
		}
		return LayoutMoec, []string{"multi-head latent attention is DeepSeek's, and DeepseekV3ForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	if candidate, unmet := gptOssLayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutGptOss, nil
		}
		return LayoutMoec, []string{"attention sinks beside clamped SwiGLU experts are gpt-oss's, and GptOssForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	if candidate, layout, unmet := hunyuanLayoutFor(m); candidate {
		if len(unmet) == 0 {
			return layout, nil
		}
		return LayoutMoec, []string{"q/k norms after rotary positions are HunYuan's, and the HunYuan classes need " + strings.Join(unmet, ", ")}
	}
	if candidate, unmet := deepseekMoELayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutDeepSeekMoE, nil
		}
		why := "an ungated shared expert beside standard attention is DeepSeek-MoE's, and DeepseekForCausalLM needs " + strings.Join(unmet, ", ")
		if m.MoE.SharedExperts == 1 {
			why += "; Qwen2MoeForCausalLM gates its one shared expert (shared_gate = true)"
		}
		return LayoutMoec, []string{why}
	}
	if candidate, unmet := dbrxLayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutDbrx, nil
		}
		return LayoutMoec, []string{"LayerNorms without biases are DBRX's, and DbrxForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	if candidate, unmet := phimoeLayoutFor(m); candidate {
		if len(unmet) == 0 {
			return LayoutPhimoe, nil
		}
		return LayoutMoec, []string{"sparsemixer routing is Phi-3.5-MoE's, and PhimoeForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	var gaps []string
	gap := func(cond bool, what string) {
		if cond {
			gaps = append(gaps, what)
		}
	}
	a := m.Attention
	gap(m.Encoder > 0, "an encoder-decoder stack")
	gap(m.Norm != program.RMSNorm, fmt.Sprintf("norm = %s (the classes use RMSNorm)", m.Norm))
	gap(m.NormPlacement != "" && m.NormPlacement != program.PreNorm, fmt.Sprintf("norm_placement = %s", m.NormPlacement))
	gap(!m.FinalNorm, "final_norm = false")
	gap(m.Position != program.Rotary, fmt.Sprintf("position = %s", m.Position))
	gap(!ropeScalingExact(m), "yarn scaling whose rope_factor is not seq_len / rope_original_seq_len (transformers takes the factor from that ratio)")
	gap(m.RopeScaling != nil && m.RopeScaling.Type == program.RopeLongrope, "longrope scaling (the export writes linear, dynamic, yarn and llama3 only)")
	gap(m.MoE != nil && m.MoE.RoutedScaleOrOne() != 1, "routed_scale (of the classes moec writes only DeepseekV3ForCausalLM, with latent attention, scales its routed experts)")
	gap(m.MTPDepth > 0, "multi-token prediction (mtp_depth)")
	gap(a.TalkingHeads, "talking heads")
	gap(a.SharesWeights(), "stochastic attention-weight sharing (share_weights < 1)")
	gap(a.ShareKV > 1, "cross-layer K/V sharing (share_kv > 1)")
	gap(a.Sinks, "attention sinks")
	gap(a.QKNorm && a.QKNormAfterRope, "q/k norms after rotary positions (qk_norm_after_rope)")
	// OLMoE's class alone clips Q/K/V, beside its q/k norms over the whole projections.
	gap(a.ClipQKV > 0 && (m.MoE == nil || m.MoE.Experts == 0 || !a.QKNorm || !a.QKNormFull),
		"clipped Q/K/V projections (clip_qkv) outside OLMoE's shape (an MoE with q/k norms over the whole projections)")
	gap(a.FullEvery > 0 && a.Window > 0, "sliding windows in some layers only (full_every; the export writes no gpt-oss class)")
	gap(a.NopeEvery > 0, "layers without rotary positions (nope_every; the export writes no Llama 4 class)")
	gap(a.ChunkSize > 0, "chunked attention (chunk)")
	gap(a.QKL2Norm, "unscaled q/k norms after rotary positions (qk_l2_norm)")
	gap(a.NopeTemperature > 0, "the query temperature of layers without rotary positions (nope_temperature)")
	gap(m.NormNoBias && m.Norm == program.LayerNorm, "LayerNorms without biases (norm_bias = false)")
	gap(m.HeadBias, "an output-head bias (head_bias)")
	gap(m.MoE != nil && m.MoE.SparsemixerEps > 0, "sparsemixer routing (sparsemixer_eps)")
	gap(m.FFN.Activation != program.SwiGLU && m.FFN.Activation != program.GeGLU, fmt.Sprintf("ffn activation %s (the classes gate their FFNs: swiglu or geglu)", m.FFN.Activation))
	if e := m.MoE; e != nil && e.Experts > 0 {
		gap(e.Router == program.RouteTokenEmbedding, "token-embedding routing (router = token_embedding)")
		gap(e.Activation != m.FFN.Activation, "experts with another activation than the dense FFN")
		gap(e.ExpertBias || m.FFN.Bias, "biases in the FFNs of an MoE model")
		gap(e.RouterBias, "a router bias")
		gap(e.Score != program.Softmax, fmt.Sprintf("score = %s (the classes route with a softmax; DeepseekV3ForCausalLM, with latent attention, with sigmoid scores)", e.Score))
		gap(e.SharedExperts > 1, fmt.Sprintf("%d shared experts (Qwen2-MoE, the one class with a shared expert, has one)", e.SharedExperts))
		gap(e.SharedExperts == 1 && !e.SharedGate, "an ungated shared expert (Qwen2-MoE scales its shared expert by sigmoid(shared_expert_gate(x)): shared_gate = true)")
		gap(e.ParallelDense && !e.ParallelAttention, "a dense FFN in parallel with the experts (parallel_dense)")
		gap(e.SwigluLimit > 0, "gpt-oss's clamped SwiGLU experts (swiglu_limit)")
		gap(e.GateInput, "gates on the experts' inputs (gate_input)")
		gap(e.Groups > 0, "node-limited routing (groups; DeepseekV3ForCausalLM has it, with latent attention)")
		gap(e.AuxFreeBias > 0, "auxiliary-loss-free bias balancing (DeepseekV3ForCausalLM has it, with latent attention)")
		if len(gaps) > 0 {
			return LayoutMoec, gaps
		}
		if e.ParallelAttention {
			return arcticLayoutFor(m)
		}
		return moeLayoutFor(m)
	}
	gap(a.QKNorm && a.QKNormFull, "q/k norms over the whole projections in a dense model (qk_norm = full; Qwen3 norms per head)")
	gap(a.BiasQKV != a.BiasOut, "a bias on Q/K/V but not on the output, or the reverse (attention_bias sets both)")
	gap(a.Window > 0, "a sliding window in a dense model")
	if len(gaps) > 0 {
		return LayoutMoec, gaps
	}
	if a.QKNorm {
		return LayoutQwen3, nil
	}
	return LayoutLlama, nil
}

// moeLayoutFor chooses among the MoE classes for an MoE model each of whose features one
// of them has: the class that needs nothing m lacks (their needs exclude one another), or
// LayoutMoec and, for each class, what m would need to be for it.
func moeLayoutFor(m *program.Model) (Layout, []string) {
	a, e := m.Attention, m.MoE
	swiglu := m.FFN.Activation == program.SwiGLU
	// OLMoE and Qwen2-MoE take head_dim as hidden_size / num_attention_heads.
	d, _ := m.Dims() // layoutFor has named what the classes lack; the sizes are filled regardless
	wholeHeads := d.Dh*d.H == d.D
	gated := e.SharedExperts == 1 && e.SharedGate
	// Mixtral and OLMoE make every layer sparse; the Qwen classes list the dense ones
	// (mlp_only_layers).
	everyLayer := e.Every <= 1 && len(e.Layers) == 0 && e.FirstDense == 0
	type need struct {
		ok   bool   // m meets it
		what string // what the class needs, as a reader would fix the model
	}
	classes := []struct {
		layout Layout
		needs  []need
	}{
		// Mixtral always renormalises its top-k, has no q/k norms, no bias, no shared expert
		// and MoE in every layer; it alone has a sliding window.
		{LayoutMixtral, []need{
			{!a.QKNorm, "no q/k norms"},
			{a.ClipQKV == 0, "no clipping of Q/K/V"},
			{e.Normalize, "a renormalised top-k (normalize = true)"},
			{everyLayer, "MoE in every layer"},
			{!a.BiasQKV && !a.BiasOut, "no attention bias"},
			{e.SharedExperts == 0, "no shared expert"},
			{swiglu, "swiglu"},
		}},
		// Qwen3-MoE: per-head q/k norms, optional renormalisation, MoE every N layers but
		// those listed dense.
		{LayoutQwen3MoE, []need{
			{a.QKNorm && !a.QKNormFull, "per-head q/k norms (qk_norm = true)"},
			{a.ClipQKV == 0, "no clipping of Q/K/V"},
			{a.BiasQKV == a.BiasOut, "attention biases on Q/K/V and the output or on none (attention_bias sets both)"},
			{e.SharedExperts == 0, "no shared expert"},
			{swiglu, "swiglu"},
			{a.Window == 0, "no sliding window"},
		}},
		// OLMoE: q/k norms over the whole projections, MoE in every layer, no biases,
		// optional renormalisation.
		{LayoutOlmoe, []need{
			{a.QKNorm && a.QKNormFull, "q/k norms over the whole projections (qk_norm = full)"},
			{everyLayer, "MoE in every layer"},
			{!a.BiasQKV && !a.BiasOut, "no attention bias"},
			{e.SharedExperts == 0, "no shared expert"},
			{swiglu, "swiglu"},
			{a.Window == 0, "no sliding window"},
			{wholeHeads, "head_dim = d_model / heads"},
		}},
		// Qwen2-MoE: biases on Q, K and V only, one shared expert scaled by
		// sigmoid(shared_expert_gate(x)), no q/k norms, optional renormalisation, MoE every
		// N layers.
		{LayoutQwen2MoE, []need{
			{!a.QKNorm, "no q/k norms"},
			{a.ClipQKV == 0, "no clipping of Q/K/V"},
			{a.BiasQKV && !a.BiasOut, "biases on Q, K and V only (qkv_bias = true, out_bias = false)"},
			{gated, "one gated shared expert (shared_experts = 1, shared_gate = true)"},
			{swiglu, "swiglu"},
			{a.Window == 0, "no sliding window"},
			{wholeHeads, "head_dim = d_model / heads"},
		}},
	}
	var why []string
	for _, c := range classes {
		var unmet []string
		for _, n := range c.needs {
			if !n.ok {
				unmet = append(unmet, n.what)
			}
		}
		if len(unmet) == 0 {
			return c.layout, nil
		}
		why = append(why, fmt.Sprintf("%s needs %s", classOf[c.layout], strings.Join(unmet, ", ")))
	}
	// DeepSeek-MoE without shared experts (n_shared_experts: null) comes after the classes
	// above: a model both hold (a Mixtral) goes out as its own class.
	if e.SharedExperts == 0 {
		unmet := deepseekMoENeeds(m)
		if len(unmet) == 0 {
			return LayoutDeepSeekMoE, nil
		}
		why = append(why, fmt.Sprintf("%s needs %s", classOf[LayoutDeepSeekMoE], strings.Join(unmet, ", ")))
	}
	return LayoutMoec, []string{"no class moec writes holds this combination of features: " + strings.Join(why, "; ")}
}

// swigluDecoderNeeds are what the Llama-lineage classes moec writes for its special
// families (Llama 4, gpt-oss, DeepSeek-V3) all need: SwiGLU FFNs and experts, pre-norm
// RMSNorm decoder layers with a final norm, rotary positions (linear, dynamic, yarn or
// llama3 scaling as transformers computes it), no multi-token prediction or head bias.
func swigluDecoderNeeds(m *program.Model, need func(ok bool, what string)) {
	act := m.FFN.Activation
	if e := m.MoE; e != nil && e.Activation != "" && e.Activation != act {
		act = e.Activation
	}
	need(m.FFN.Activation == program.SwiGLU && act == program.SwiGLU, "swiglu FFNs and experts")
	need(m.Norm == program.RMSNorm && (m.NormPlacement == "" || m.NormPlacement == program.PreNorm) && m.FinalNorm && m.Encoder == 0,
		"pre-norm RMSNorm decoder layers and a final norm")
	need(m.Position == program.Rotary && ropeScalingExact(m) && (m.RopeScaling == nil || m.RopeScaling.Type != program.RopeLongrope),
		"rotary positions (without longrope)")
	need(m.MTPDepth == 0 && !m.HeadBias, "no multi-token prediction or head bias")
}
