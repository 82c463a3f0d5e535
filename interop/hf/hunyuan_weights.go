package hf

import (
	"fmt"
	"regexp"

	"github.com/moec-dev/moec/compiler/program"
)

// The HunYuan classes' tensors differ from moec's by name alone (one for one, no fusion,
// no permutation: both rotate halves, transformers' rotate_half):
//   - self_attn.query_layernorm and key_layernorm are moec's q_norm and k_norm (per head,
//     after rotary positions). Hunyuan-Large's cross-layer attention leaves k_proj and
//     v_proj out of the layers that reuse the layer before's (layer_idx %
//     cla_share_factor ≠ 0), as moec's share_kv does, and keeps a key_layernorm in every
//     layer, as qk_norm_after_rope does;
//   - mlp.gate.wg (HunYuanMoEV1Gate, HunYuanTopKGate) is moec's router
//     block_sparse_moe.gate;
//   - mlp.shared_mlp.{gate,up,down}_proj is moec's shared_experts.0.{w1,w3,w2};
//   - mlp.experts.N.{gate,up,down}_proj is moec's experts.N.{w1,w3,w2}. transformers 5
//     fuses HunYuanMoEV1's experts when it loads them and writes them back per expert
//     (its qwen2_moe conversion), so a saved folder holds these names.
var (
	hunyuanTensor = regexp.MustCompile(`^(model\.layers\.\d+\.)(self_attn\.(?:query|key)_layernorm\.weight|mlp\.(?:gate\.wg\.weight|shared_mlp\.(?:gate|up|down)_proj\.weight|experts\.\d+\.(?:gate|up|down)_proj\.weight))$`)
	moecHunyuan   = regexp.MustCompile(`^(model\.layers\.\d+\.)(self_attn\.[qk]_norm\.weight|block_sparse_moe\.(?:gate\.weight|shared_experts\.0\.w[123]\.weight|experts\.\d+\.w[123]\.weight))$`)
)

// hunyuanRenames maps the HunYuan name of a layer's tensor (after the layer prefix) to
// moec's; the routed experts' projections are renamed as the shared MLP's.
var hunyuanRenames = map[string]string{
	"self_attn.query_layernorm.weight": "self_attn.q_norm.weight",
	"self_attn.key_layernorm.weight":   "self_attn.k_norm.weight",
	"mlp.gate.wg.weight":               "block_sparse_moe.gate.weight",
	"mlp.shared_mlp.gate_proj.weight":  "block_sparse_moe.shared_experts.0.w1.weight",
	"mlp.shared_mlp.up_proj.weight":    "block_sparse_moe.shared_experts.0.w3.weight",
	"mlp.shared_mlp.down_proj.weight":  "block_sparse_moe.shared_experts.0.w2.weight",
}

var (
	hunyuanExpert = regexp.MustCompile(`^mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$`)
	moecExpertRel = regexp.MustCompile(`^block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$`)
	hunyuanProj   = map[string]string{"gate": "w1", "up": "w3", "down": "w2"}
	moecProjHY    = map[string]string{"w1": "gate", "w3": "up", "w2": "down"}
)

// hunyuanToMoec returns the moec name of a HunYuan tensor; the others (embeddings, norms,
// attention projections, head) have moec's names already.
func hunyuanToMoec(name string) string {
	g := hunyuanTensor.FindStringSubmatch(name)
	if g == nil {
		return name
	}
	prefix, rest := g[1], g[2]
	if e := hunyuanExpert.FindStringSubmatch(rest); e != nil {
		return fmt.Sprintf("%sblock_sparse_moe.experts.%s.%s.weight", prefix, e[1], hunyuanProj[e[2]])
	}
	return prefix + hunyuanRenames[rest]
}

// hunyuanFromMoec returns the HunYuan name of moec's tensor name.
func hunyuanFromMoec(name string) string {
	g := moecHunyuan.FindStringSubmatch(name)
	if g == nil {
		return name
	}
	prefix, rest := g[1], g[2]
	if e := moecExpertRel.FindStringSubmatch(rest); e != nil {
		return fmt.Sprintf("%smlp.experts.%s.%s_proj.weight", prefix, e[1], moecProjHY[e[2]])
	}
	for hy, moec := range hunyuanRenames {
		if moec == rest {
			return prefix + hy
		}
	}
	return name
}

// hunyuanLayoutFor reports whether m is a HunYuan model (q/k norms after rotary positions
// are HunYuan's alone) and, when it is, which class holds it or what it lacks.
// HunYuanMoEV1ForCausalLM (Hunyuan-A13B, in transformers) always renormalises its top-k
// and has no cross-layer attention; HunYuanForCausalLM (Hunyuan-Large, Tencent's remote
// code) renormalises a top-k of two or more, weighs a top-1 expert by its softmax
// probability, and shares K/V across cla_share_factor layers. A model both hold goes out
// as the one transformers ships.
func hunyuanLayoutFor(m *program.Model) (candidate bool, layout Layout, unmet []string) {
	a, e := m.Attention, m.MoE
	if !a.QKNorm || !a.QKNormAfterRope {
		return false, "", nil
	}
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	if e == nil || e.Experts == 0 {
		return true, LayoutMoec, []string{"routed experts (the HunYuan classes build an MoE in every layer)"}
	}
	d, _ := m.Dims() // the checker has accepted m; only the widths are read
	need(e.Score == program.Softmax, "a softmax router (score = softmax)")
	need(e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias && !m.FFN.Bias, "a plain router and no FFN biases")
	need(e.RoutedScaleOrOne() == 1 && e.SparsemixerEps == 0 && e.Groups == 0 && e.AuxFreeBias == 0 && e.SwigluLimit == 0 && !e.GateInput,
		"plain top-k routing (no routed_scale, sparsemixer, groups, bias balancing, clamped SwiGLU or gated expert inputs)")
	need(len(e.Layers) == 0 && e.FirstDense == 0 && e.Every <= 1 && !e.ParallelDense && !e.ParallelAttention, "MoE in every layer, no parallel dense FFN")
	need(d.EHidden == d.Hidden, "experts as wide as ffn.hidden (intermediate_size is both)")
	need(e.SharedExperts == 1 && !e.SharedGate && d.SHidden%d.EHidden == 0, "one ungated shared MLP a whole number of experts wide (num_shared_expert · intermediate_size)")
	swigluDecoderNeeds(m, need)
	need(m.RopeScaling == nil, "rotary positions without rope_scaling (HunYuan's NTK alpha is folded into rope_base on import)")
	need(!a.QKNormFull, "per-head q/k norms")
	need(!a.BiasQKV && !a.BiasOut && a.ClipQKV == 0, "no attention biases or clipping")
	need(!a.MLA && !a.TalkingHeads && !a.SharesWeights() && !a.Sinks && a.Window == 0 && a.FullEvery == 0 && a.NopeEvery == 0 && a.ChunkSize == 0 && !a.QKL2Norm && a.NopeTemperature == 0,
		"plain grouped-query attention (no MLA, talking heads, weight sharing, sinks, windows or chunks)")
	if len(unmet) > 0 {
		return true, LayoutMoec, unmet
	}
	v1 := a.ShareKV <= 1 && e.Normalize && d.SHidden == d.EHidden
	if v1 {
		return true, LayoutHunyuanMoE, nil
	}
	var large []string
	if e.Normalize != (e.TopK > 1) {
		large = append(large, "a top-k of two or more renormalised, or a top-1 expert weighed by its probability (normalize = top_k > 1)")
	}
	if d.Dh*d.H != d.D {
		large = append(large, "head_dim = d_model / heads")
	}
	if len(large) == 0 {
		return true, LayoutHunyuan, nil
	}
	var why []string
	if a.ShareKV > 1 {
		why = append(why, "no cross-layer K/V sharing (share_kv)")
	}
	if !e.Normalize {
		why = append(why, "a renormalised top-k (normalize = true)")
	}
	if d.SHidden != d.EHidden {
		why = append(why, "a shared MLP as wide as the experts")
	}
	return true, LayoutMoec, []string{fmt.Sprintf("%s needs %v; %s needs %v", classOf[LayoutHunyuanMoE], why, classOf[LayoutHunyuan], large)}
}

// hunyuanConfig sets HunYuanMoEV1Config's or HunYuanConfig's fields for m.
func hunyuanConfig(cfg map[string]any, m *program.Model, l Layout) {
	a, e := m.Attention, m.MoE
	d, _ := m.Dims()
	cfg["intermediate_size"] = d.EHidden
	cfg["num_experts"] = e.Experts
	cfg["moe_topk"] = e.TopK
	cfg["attention_bias"] = false
	delete(cfg, "rope_scaling")
	if l == LayoutHunyuanMoE {
		return
	}
	// HunYuanConfig (Tencent's configuration_hunyuan.py): head_dim is hidden_size /
	// num_attention_heads. Its plain HunYuanRotaryEmbedding rounds the inverse frequencies
	// to bfloat16; NTK alpha 1 takes the float32 path with rope_theta unchanged (and reads
	// back as rope_base = rope_theta).
	delete(cfg, "head_dim")
	cfg["rope_scaling"] = map[string]any{"type": "dynamic", "factor": floatField(1), "alpha": floatField(1)}
	cfg["mlp_bias"] = false
	cfg["num_shared_expert"] = d.SHidden / d.EHidden
	cfg["use_mixed_mlp_moe"] = true
	cfg["use_qk_norm"] = true
	cfg["use_cla"] = a.ShareKV > 1
	cfg["cla_share_factor"] = max(a.ShareKV, 1)
	cfg["moe_drop_tokens"] = false
	cfg["moe_random_routing_dropped_token"] = false
	cfg["pretraining_tp"] = 1
	cfg["auto_map"] = map[string]string{
		"AutoConfig":           "configuration_hunyuan.HunYuanConfig",
		"AutoModelForCausalLM": "modeling_hunyuan.HunYuanForCausalLM",
	}
}

// hunyuanNotes says what the HunYuan configs cannot hold of m, and how Hunyuan-Large's
// remote code is found.
func hunyuanNotes(m *program.Model, l Layout) []string {
	var notes []string
	if l == LayoutHunyuan {
		notes = append(notes, "HunYuanForCausalLM is Tencent's remote code: put modeling_hunyuan.py and configuration_hunyuan.py of tencent/Tencent-Hunyuan-Large beside config.json (its auto_map names them) and load with trust_remote_code=True")
	}
	if e := m.MoE; e.BalanceLoss != 0.001 || e.ZLoss > 0 {
		notes = append(notes, fmt.Sprintf("balance_loss = %v and z_loss = %v have no HunYuan config field; an import trains with a balance loss of 0.001 and no z-loss", e.BalanceLoss, e.ZLoss))
	}
	return notes
}
