package hf

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// DBRX's tensors (transformers' DbrxForCausalLM) differ from moec's in names and in two
// fusions, which dbrxToMoec undoes on import and dbrxFromMoec does on export:
//   - names: transformer.wte (model.embed_tokens), transformer.blocks.N (model.layers.N)
//     with norm_attn_norm.norm_1 / norm_2 (input_ / post_attention_layernorm, weights
//     only: DBRX's LayerNorms have no bias), norm_attn_norm.attn.out_proj (self_attn.o_proj),
//     ffn.router.layer (block_sparse_moe.gate), transformer.norm_f (model.norm);
//   - attention: Wqkv [D + 2·kv·hd, D] is q_proj, k_proj and v_proj stacked by rows;
//   - experts: ffn.experts.mlp.w1 and v1 [E·I, D] stack each expert's gate (w1) and up
//     (w3) projections as moec holds them (x·Wᵀ, DbrxExpertGLU's x.matmul(w1.T)), and w2
//     [E·I, D] each expert's down projection transposed (intermediate.matmul(w2)): moec's
//     w2 is [D, I].
var (
	dbrxBlock  = regexp.MustCompile(`^transformer\.blocks\.(\d+)\.(.+)$`)
	moecLayer  = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)
	moecExpSet = regexp.MustCompile(`^block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$`)
)

// dbrxRenames are the tensors of a block renamed one for one, DBRX's name (after the block
// prefix) to moec's (after the layer prefix).
var dbrxRenames = map[string]string{
	"norm_attn_norm.norm_1.weight":        "input_layernorm.weight",
	"norm_attn_norm.norm_2.weight":        "post_attention_layernorm.weight",
	"norm_attn_norm.attn.out_proj.weight": "self_attn.o_proj.weight",
	"ffn.router.layer.weight":             "block_sparse_moe.gate.weight",
}

// dbrxTop are the tensors outside the blocks, DBRX's name to moec's.
var dbrxTop = map[string]string{
	"transformer.wte.weight":    "model.embed_tokens.weight",
	"transformer.norm_f.weight": "model.norm.weight",
	"lm_head.weight":            "lm_head.weight",
}

// dbrxToMoec converts the tensors of a DBRX folder to moec's: renamed, Wqkv split into
// q_proj, k_proj and v_proj, each layer's fused experts split per expert (w2 transposed).
func dbrxToMoec(ts []safetensors.Tensor, m *program.Model) ([]safetensors.Tensor, error) {
	d, err := m.Dims()
	if err != nil {
		return nil, err
	}
	out := make([]safetensors.Tensor, 0, len(ts))
	for _, t := range ts {
		if to, ok := dbrxTop[t.Name]; ok {
			t.Name = to
			out = append(out, t)
			continue
		}
		g := dbrxBlock.FindStringSubmatch(t.Name)
		if g == nil {
			return nil, fmt.Errorf("%s is not a tensor of DbrxForCausalLM", t.Name)
		}
		prefix := "model.layers." + g[1] + "."
		if to, ok := dbrxRenames[g[2]]; ok {
			t.Name = prefix + to
			out = append(out, t)
			continue
		}
		switch g[2] {
		case "norm_attn_norm.attn.Wqkv.weight":
			q, kv := d.QDim, d.KVDim
			if len(t.Shape) != 2 || t.Shape[0] != q+2*kv || t.Shape[1] != d.D {
				return nil, fmt.Errorf("%s has shape %v, want [%d, %d] (queries, keys and values stacked)", t.Name, t.Shape, q+2*kv, d.D)
			}
			for _, p := range []struct {
				name     string
				from, to int
			}{{"q_proj", 0, q}, {"k_proj", q, q + kv}, {"v_proj", q + kv, q + 2*kv}} {
				out = append(out, safetensors.Tensor{Name: prefix + "self_attn." + p.name + ".weight", Shape: []int{p.to - p.from, d.D},
					Data: append([]float32(nil), t.Data[p.from*d.D:p.to*d.D]...)})
			}
		case "ffn.experts.mlp.w1", "ffn.experts.mlp.v1", "ffn.experts.mlp.w2":
			E, I := d.E, d.EHidden
			if len(t.Shape) != 2 || t.Shape[0] != E*I || t.Shape[1] != d.D {
				return nil, fmt.Errorf("%s has shape %v, want [%d, %d] (experts × ffn_hidden_size, d_model)", t.Name, t.Shape, E*I, d.D)
			}
			part := g[2][len("ffn.experts.mlp."):]
			for e := 0; e < E; e++ {
				rows := t.Data[e*I*d.D : (e+1)*I*d.D]
				name := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", prefix, e)
				switch part {
				case "w1":
					out = append(out, safetensors.Tensor{Name: name + "w1.weight", Shape: []int{I, d.D}, Data: append([]float32(nil), rows...)})
				case "v1":
					out = append(out, safetensors.Tensor{Name: name + "w3.weight", Shape: []int{I, d.D}, Data: append([]float32(nil), rows...)})
				default:
					out = append(out, safetensors.Tensor{Name: name + "w2.weight", Shape: []int{d.D, I}, Data: transpose(rows, I, d.D)})
				}
			}
		default:
			return nil, fmt.Errorf("%s is not a tensor of DbrxForCausalLM", t.Name)
		}
	}
	return out, nil
}

// transpose returns the [cols, rows] transpose of the row-major [rows, cols] matrix w.
func transpose(w []float32, rows, cols int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = w[r*cols+c]
		}
	}
	return out
}

// dbrxFromMoec converts moec's tensors of m, in arrange's order, to DBRX's, and says for
// each which of moec's it comes from. A layer's Wqkv takes the place of its q_proj, and its
// fused experts (w1, v1, w2) the place of its first expert tensor.
func dbrxFromMoec(ts []safetensors.Tensor, m *program.Model) ([]safetensors.Tensor, []string, error) {
	d, err := m.Dims()
	if err != nil {
		return nil, nil, err
	}
	type layer struct {
		q, k, v       *safetensors.Tensor
		qkvAt         int
		gate, up, dn  map[int]safetensors.Tensor
		expertsAt     int
		expertsPlaced bool
	}
	layers := map[string]*layer{}
	var order []string
	var out []safetensors.Tensor
	var from []string
	for i := range ts {
		t := ts[i]
		if to := dbrxTopName(t.Name); to != "" {
			out, from = append(out, safetensors.Tensor{Name: to, Shape: t.Shape, Data: t.Data}), append(from, t.Name)
			continue
		}
		g := moecLayer.FindStringSubmatch(t.Name)
		if g == nil {
			return nil, nil, fmt.Errorf("%s has no DbrxForCausalLM name", t.Name)
		}
		prefix := "transformer.blocks." + g[1] + "."
		l := layers[prefix]
		if l == nil {
			l = &layer{gate: map[int]safetensors.Tensor{}, up: map[int]safetensors.Tensor{}, dn: map[int]safetensors.Tensor{}, qkvAt: -1}
			layers[prefix] = l
			order = append(order, prefix)
		}
		renamed := ""
		for hf, moec := range dbrxRenames {
			if moec == g[2] {
				renamed = hf
			}
		}
		if renamed != "" {
			out, from = append(out, safetensors.Tensor{Name: prefix + renamed, Shape: t.Shape, Data: t.Data}), append(from, t.Name)
			continue
		}
		switch g[2] {
		case "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight":
			if l.qkvAt < 0 {
				l.qkvAt = len(out)
				out = append(out, safetensors.Tensor{})
				from = append(from, t.Name[:len(t.Name)-len(g[2])]+"self_attn.{q,k,v}_proj.weight")
			}
			switch g[2][len("self_attn."):][0] {
			case 'q':
				l.q = &ts[i]
			case 'k':
				l.k = &ts[i]
			default:
				l.v = &ts[i]
			}
			continue
		}
		x := moecExpSet.FindStringSubmatch(g[2])
		if x == nil {
			return nil, nil, fmt.Errorf("%s has no DbrxForCausalLM name", t.Name)
		}
		if !l.expertsPlaced {
			l.expertsPlaced, l.expertsAt = true, len(out)
			out = append(out, safetensors.Tensor{}, safetensors.Tensor{}, safetensors.Tensor{})
			base := t.Name[:len(t.Name)-len(g[2])] + "block_sparse_moe.experts.*."
			from = append(from, base+"w1.weight", base+"w3.weight", base+"w2.weight")
		}
		e, _ := strconv.Atoi(x[1]) // the pattern's digits
		switch x[2] {
		case "w1":
			l.gate[e] = t
		case "w3":
			l.up[e] = t
		default:
			l.dn[e] = t
		}
	}
	for _, prefix := range order {
		l := layers[prefix]
		if l.qkvAt >= 0 {
			if l.q == nil || l.k == nil || l.v == nil {
				return nil, nil, fmt.Errorf("layer %s lacks one of q_proj, k_proj and v_proj", prefix)
			}
			qkv := append(append(append([]float32(nil), l.q.Data...), l.k.Data...), l.v.Data...)
			out[l.qkvAt] = safetensors.Tensor{Name: prefix + "norm_attn_norm.attn.Wqkv.weight", Shape: []int{len(qkv) / d.D, d.D}, Data: qkv}
		}
		if !l.expertsPlaced {
			continue
		}
		E, I := d.E, d.EHidden
		if len(l.gate) != E || len(l.up) != E || len(l.dn) != E {
			return nil, nil, fmt.Errorf("layer %s has %d gate, %d up and %d down expert projections of %d experts", prefix, len(l.gate), len(l.up), len(l.dn), E)
		}
		w1, v1, w2 := make([]float32, 0, E*I*d.D), make([]float32, 0, E*I*d.D), make([]float32, 0, E*I*d.D)
		for e := 0; e < E; e++ {
			if len(l.gate[e].Data) != I*d.D || len(l.up[e].Data) != I*d.D || len(l.dn[e].Data) != I*d.D {
				return nil, nil, fmt.Errorf("expert %d of layer %s: projections of unequal sizes", e, prefix)
			}
			w1, v1 = append(w1, l.gate[e].Data...), append(v1, l.up[e].Data...)
			w2 = append(w2, transpose(l.dn[e].Data, d.D, I)...)
		}
		for j, p := range []struct {
			name string
			data []float32
		}{{"w1", w1}, {"v1", v1}, {"w2", w2}} {
			out[l.expertsAt+j] = safetensors.Tensor{Name: prefix + "ffn.experts.mlp." + p.name, Shape: []int{E * I, d.D}, Data: p.data}
		}
	}
	return out, from, nil
}

// dbrxTopName is DBRX's name of moec's tensor outside the layers ("" for a layer's).
func dbrxTopName(name string) string {
	for hf, moec := range dbrxTop {
		if moec == name {
			return hf
		}
	}
	return ""
}

// dbrxLayoutFor reports whether m is DBRX as DbrxForCausalLM computes it (a model with
// LayerNorms without biases is one only as DBRX), and when it is not, what it lacks.
func dbrxLayoutFor(m *program.Model) (candidate bool, unmet []string) {
	if m.Norm != program.LayerNorm || !m.NormNoBias {
		return false, nil
	}
	e, a := m.MoE, m.Attention
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	moe := e != nil && e.Experts > 0
	need(moe && e.Every <= 1 && len(e.Layers) == 0 && e.FirstDense == 0 && e.SharedExperts == 0 && !e.ParallelDense && !e.ParallelAttention,
		"routed experts in every layer, no shared or parallel dense FFN")
	need(moe && e.Score == program.Softmax && e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias && !e.GateInput &&
		e.RoutedScaleOrOne() == 1 && e.SparsemixerEps == 0 && e.Groups == 0 && e.AuxFreeBias == 0 && e.SwigluLimit == 0,
		"a plain softmax top-k router (optionally renormalised) and unbiased experts")
	need(m.FFN.Activation == program.SwiGLU && (!moe || e.Activation == "" || e.Activation == program.SwiGLU), "swiglu experts")
	need((m.NormPlacement == "" || m.NormPlacement == program.PreNorm) && m.FinalNorm && m.Encoder == 0 && m.NormEps == 1e-5,
		"pre-norm decoder layers, a final norm and norm_eps 1e-5 (DBRX's LayerNorms use torch's default)")
	need(m.Position == program.Rotary && m.RopeScaling == nil, "rotary positions without scaling")
	need(m.MTPDepth == 0 && !m.HeadBias && !m.TieEmbeddings, "an untied output head without bias, no multi-token prediction")
	d, _ := m.Dims()
	need(d.Dh*d.H == d.D, "head_dim = d_model / heads")
	need(!a.BiasQKV && !a.BiasOut && !a.QKNorm && !a.QKL2Norm, "no attention biases or q/k norms")
	need(!a.MLA && !a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && !a.Sinks && a.Window == 0 && a.NopeEvery == 0 && a.ChunkSize == 0 && a.NopeTemperature == 0,
		"plain grouped-query attention (no MLA, talking heads, sharing, sinks, windows, position-free or chunked layers)")
	return true, unmet
}

// dbrxConfig is DbrxConfig's config.json for m: the model's fields, attn_config and
// ffn_config (moe_normalize_expert_weights 1 renormalises the top-k by their sum, null
// keeps them).
func dbrxConfig(m *program.Model) map[string]any {
	a, e := m.Attention, m.MoE
	var clip any
	if a.ClipQKV > 0 {
		clip = floatField(a.ClipQKV)
	}
	var normalize any
	if e.Normalize {
		normalize = floatField(1)
	}
	return map[string]any{
		"architectures": []string{classOf[LayoutDbrx]},
		"model_type":    string(LayoutDbrx),
		"vocab_size":    m.PaddedVocab(),
		"d_model":       m.DModel,
		"n_heads":       a.Heads,
		"n_layers":      m.Layers,
		"max_seq_len":   m.SeqLen,
		"emb_pdrop":     floatField(0),
		"resid_pdrop":   floatField(0),
		"attn_config": map[string]any{
			"attn_pdrop": floatField(0), "clip_qkv": clip, "kv_n_heads": a.KVHeads, "rope_theta": floatField(m.RopeBase),
		},
		"ffn_config": map[string]any{
			"ffn_act_fn": map[string]any{"name": "silu"}, "ffn_hidden_size": e.ExpertHidden,
			"moe_num_experts": e.Experts, "moe_top_k": e.TopK, "moe_jitter_eps": nil,
			"moe_loss_weight": floatField(e.BalanceLoss), "moe_normalize_expert_weights": normalize,
		},
		// transformers 5 reads the base here alone (attn_config's for transformers 4).
		"rope_parameters":     map[string]any{"rope_type": "default", "rope_theta": floatField(m.RopeBase)},
		"tie_word_embeddings": false,
		"torch_dtype":         "float32",
		"use_cache":           true,
	}
}
