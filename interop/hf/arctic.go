package hf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// arctic reads Snowflake Arctic (model_type arctic, Snowflake's modeling_arctic.py, remote
// code): Mixtral's attention and experts (a softmax over the experts, the top k
// renormalised, SwiGLU experts w1/w3/w2 under block_sparse_moe), MoE in the layers with
// (i+1) % moe_layer_frequency == 0 (ArcticMoE.is_moe_layer) and a dense MLP of
// intermediate_size in the others (block_sparse_moe.mlp). With parallel_attn_mlp_res each
// MoE layer reads post_attention_layernorm(layer input), beside attention, and adds a
// residual MLP of hidden_size width with its own residual_layernorm after attention:
// moe.parallel_dense and moe.parallel_attention, ffn.hidden = hidden_size.
func (s *spec) arctic(r *reader) {
	inter := r.required("intermediate_size")
	m := &moeSpec{
		experts: int(r.required("num_local_experts")), topK: int(r.integer("num_experts_per_tok", 1)),
		expertHidden: inter, score: "softmax", normalize: true,
		balance: r.float("router_aux_loss_coef", 0.001),
	}
	freq := int(r.integer("moe_layer_frequency", 2))
	if freq < 1 {
		r.bad("moe_layer_frequency", "must be at least 1")
		freq = 1
	}
	m.allLayers(s.layers, freq-1, freq)
	s.ffnHidden = inter
	if r.boolean("parallel_attn_mlp_res", false) && len(m.moeLayers) > 0 {
		m.parallelAttention = true
		s.ffnHidden = s.dModel // ArcticMLP(is_residual_mlp=True) is hidden_size wide
		if len(m.moeLayers) < s.layers && inter != s.dModel {
			r.refuse("parallel_attn_mlp_res", fmt.Sprintf("a residual MLP of hidden_size %d beside dense layers of intermediate_size %d", s.dModel, inter),
				"moec's dense FFNs, the residual one included, have one width (ffn.hidden)")
		}
	}
	// The capacity settings configure DeepSpeed's MoE layer, which ArcticMoE uses only when
	// the caller passes use_deepspeed_moe; the class's own path, which moec computes, drops
	// no token. use_residual is never read by the class (it passes use_residual=False to
	// DeepSpeed itself), nor is enable_expert_tensor_parallelism outside DeepSpeed.
	for _, k := range []string{"moe_train_capacity_factor", "moe_eval_capacity_factor", "moe_min_capacity",
		"moe_token_dropping", "enable_expert_tensor_parallelism", "use_residual"} {
		r.used[k] = true
	}
	if r.present("quantization") {
		r.refuse("quantization", "a quantized checkpoint (DeepSpeed FP quantization)", "moec imports float weights only")
	}
	s.moe = m
}

// arcticLayoutFor is ArcticForCausalLM for an MoE model with experts beside attention
// (parallel_attention) whose other features layoutFor has found the class to have, or
// LayoutMoec and what the class would need.
func arcticLayoutFor(m *program.Model) (Layout, []string) {
	a, e := m.Attention, m.MoE
	d, _ := m.Dims()
	var unmet []string
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	need(!a.QKNorm, "no q/k norms")
	need(a.ClipQKV == 0, "no clipping of Q/K/V")
	need(!a.BiasQKV && !a.BiasOut, "no attention bias")
	need(e.Normalize, "a renormalised top-k (normalize = true)")
	need(e.SharedExperts == 0, "no shared expert")
	need(m.FFN.Activation == program.SwiGLU, "swiglu")
	need(a.Window == 0, "no sliding window")
	need(m.RopeScaling == nil, "plain rotary positions (ArcticConfig has no rope_scaling)")
	need(d.Dh*d.H == d.D, "head_dim = d_model / heads")
	need(m.FFN.Hidden == m.DModel, "ffn.hidden = d_model (the residual MLP is hidden_size wide)")
	need(len(e.Layers) == 0 && e.FirstDense == 0, "MoE layers by a step alone (moe_layer_frequency; no list or first_dense)")
	if e.Every > 1 {
		// ArcticMoE's dense layers are intermediate_size wide, as its experts are.
		need(d.EHidden == d.Hidden, "expert_hidden = ffn.hidden where some layers are dense")
	}
	if len(unmet) > 0 {
		return LayoutMoec, []string{"no class moec writes holds this combination of features: ArcticForCausalLM needs " + strings.Join(unmet, ", ")}
	}
	return LayoutArctic, nil
}

// arcticConfig sets ArcticConfig's fields: intermediate_size is the experts' (and dense
// layers') width.
func arcticConfig(cfg map[string]any, m *program.Model) {
	e := m.MoE
	d, _ := m.Dims()
	delete(cfg, "head_dim") // ArcticAttention takes hidden_size / num_attention_heads
	cfg["intermediate_size"] = d.EHidden
	cfg["num_local_experts"] = e.Experts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["moe_layer_frequency"] = max(e.Every, 1)
	cfg["parallel_attn_mlp_res"] = e.ParallelAttention
	cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
	cfg["sliding_window"] = nil
	delete(cfg, "rope_scaling")
}

var (
	// Arctic's dense FFNs: the residual MLP of an MoE layer and the MLP of a dense layer;
	// moec's mlp.gate_proj/up_proj/down_proj.
	arcticDense = regexp.MustCompile(`^model\.layers\.(\d+)\.(?:residual_mlp|block_sparse_moe\.mlp)\.(w1|w3|w2)\.weight$`)
	moecDense   = regexp.MustCompile(`^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$`)
	arcticProj  = map[string]string{"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
	moecProj    = map[string]string{"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
)

// arcticToMoec returns the moec name of an ArcticForCausalLM tensor: the experts, router
// and norms keep theirs.
func arcticToMoec(name string) string {
	if g := arcticDense.FindStringSubmatch(name); g != nil {
		return "model.layers." + g[1] + ".mlp." + arcticProj[g[2]] + ".weight"
	}
	return name
}

// arcticFromMoec returns the ArcticForCausalLM name of moec's tensor of m: a dense FFN is
// the residual MLP in an MoE layer and block_sparse_moe.mlp in a dense one.
func arcticFromMoec(m *program.Model, name string) string {
	g := moecDense.FindStringSubmatch(name)
	if g == nil {
		return name
	}
	layer, err := strconv.Atoi(g[1])
	if err != nil {
		return name
	}
	part := "block_sparse_moe.mlp"
	if m.IsMoELayer(layer) {
		part = "residual_mlp"
	}
	return fmt.Sprintf("model.layers.%d.%s.%s.weight", layer, part, moecProj[g[2]])
}
