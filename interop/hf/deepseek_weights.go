package hf

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// DeepSeek-V2/V3's tensors (the checkpoints' names, which DeepseekV3ForCausalLM and
// DeepseekV2ForCausalLM load) differ from moec's in three ways, which deepseekToMoec undoes
// on import and deepseekFromMoec does on export:
//   - names: the router, its selection bias and the routed experts live under mlp.
//     (mlp.gate.weight, mlp.gate.e_score_correction_bias, mlp.experts.N.gate_proj/up_proj/
//     down_proj), as in Qwen3-MoE;
//   - shared experts: mlp.shared_experts is ONE MLP of width n_shared_experts ·
//     moe_intermediate_size, where moec holds n_shared separate experts
//     (block_sparse_moe.shared_experts.S.w1/w3/w2): the sum of n MLPs of width I is the one
//     MLP whose gate/up rows and down columns are theirs stacked in order;
//   - rotary pairs: DeepSeek's checkpoints (rope_interleave = true, transformers' default,
//     and DeepSeek-V2's view_as_complex) rotate adjacent rope features (2j, 2j+1) together,
//     moec's runtime pairs j with j + rope/2 (runtime/nn/mla.go): the rope rows of each
//     head of q_b_proj (q_proj) and of kv_a_proj_with_mqa (and its bias) are permuted. The
//     scores q·k are the same under one permutation of both.
var (
	deepseekMoE      = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.(gate\.weight|gate\.e_score_correction_bias|experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight)$`)
	moecDeepseekMoE  = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.(gate\.weight|gate\.e_score_correction_bias|experts\.\d+\.(w1|w3|w2)\.weight)$`)
	deepseekShared   = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.shared_experts\.(gate_proj|up_proj|down_proj)\.weight$`)
	moecShareds      = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.shared_experts\.(\d+)\.(w1|w3|w2)\.weight$`)
	deepseekRopeRows = regexp.MustCompile(`^model\.layers\.\d+\.self_attn\.(q_b_proj\.weight|q_proj\.weight|kv_a_proj_with_mqa\.(weight|bias))$`)
)

// sharedPart pairs DeepSeek's fused shared-expert projections with moec's names.
var sharedPart = map[string]string{"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}

// deepseekNameToMoec renames a DeepSeek tensor whose rename is one for one.
func deepseekNameToMoec(name string) string {
	if m := deepseekMoE.FindStringSubmatch(name); m != nil {
		return m[1] + "block_sparse_moe." + qwenToMoec.Replace(m[2])
	}
	return name
}

// deepseekNameFromMoec is deepseekNameToMoec's inverse.
func deepseekNameFromMoec(name string) string {
	if m := moecDeepseekMoE.FindStringSubmatch(name); m != nil {
		return m[1] + "mlp." + moecToQwen.Replace(m[2])
	}
	return name
}

// ropeRows returns the rows of a rope-carrying projection of m: the rows of one block
// (a head of q, the one row block of kv_a_proj_with_mqa) and where in it the rope rows
// start.
func ropeRows(m *program.Model, name string) (block, first int) {
	a := m.Attention
	if strings.Contains(name, "kv_a_proj_with_mqa") {
		return int(a.KVLoraRank + a.QKRopeHeadDim), int(a.KVLoraRank)
	}
	return int(a.QKNopeHeadDim + a.QKRopeHeadDim), int(a.QKNopeHeadDim)
}

// permuteRope returns t with the rope rows of every block permuted: half → interleaved
// (interleaved feature 2j is rotate-half feature j, 2j+1 is j + rope/2) when toPairs, else
// the reverse. A vector (a bias) is a matrix of one column.
func permuteRope(t safetensors.Tensor, m *program.Model, toPairs bool) safetensors.Tensor {
	block, first := ropeRows(m, t.Name)
	rope := int(m.Attention.QKRopeHeadDim)
	cols := 1
	if len(t.Shape) == 2 {
		cols = t.Shape[1]
	}
	out := append([]float32(nil), t.Data...)
	half := rope / 2
	for b := 0; b < len(t.Data)/(block*cols); b++ {
		base := b*block + first
		for j := 0; j < rope; j++ {
			src := base + j/2 // pairs ← halves: pair row j is half row j/2 or j/2 + rope/2
			if j%2 == 1 {
				src += half
			}
			dst := base + j
			if !toPairs {
				src, dst = dst, src
			}
			copy(out[dst*cols:(dst+1)*cols], t.Data[src*cols:(src+1)*cols])
		}
	}
	return safetensors.Tensor{Name: t.Name, Shape: t.Shape, Data: out}
}

// deepseekToMoec converts DeepSeek tensors, already renamed by toMoec, to moec's: it
// splits each layer's fused shared experts into m's shared experts and, when interleaved
// (config.json's rope_interleave, true unless false), permutes the rope rows to moec's
// rotate-half order.
func deepseekToMoec(ts []safetensors.Tensor, m *program.Model, interleaved bool) ([]safetensors.Tensor, error) {
	n := 0
	if m.MoE != nil {
		n = m.MoE.SharedExperts
	}
	var out []safetensors.Tensor
	for _, t := range ts {
		if interleaved && deepseekRopeRows.MatchString(t.Name) {
			t = permuteRope(t, m, false)
		}
		g := deepseekShared.FindStringSubmatch(t.Name)
		if g == nil {
			out = append(out, t)
			continue
		}
		if n == 0 || len(t.Shape) != 2 {
			return nil, fmt.Errorf("tensor %s: the model has no shared experts of this shape", t.Name)
		}
		down := g[2] == "down_proj"
		rows, cols := t.Shape[0], t.Shape[1]
		width := rows
		if down {
			width = cols
		}
		if width%n != 0 {
			return nil, fmt.Errorf("tensor %s of shape %v does not split into %d shared experts", t.Name, t.Shape, n)
		}
		w := width / n
		for s := 0; s < n; s++ {
			name := fmt.Sprintf("%sblock_sparse_moe.shared_experts.%d.%s.weight", g[1], s, sharedPart[g[2]])
			if !down {
				out = append(out, safetensors.Tensor{Name: name, Shape: []int{w, cols}, Data: t.Data[s*w*cols : (s+1)*w*cols]})
				continue
			}
			part := make([]float32, rows*w)
			for r := 0; r < rows; r++ {
				copy(part[r*w:(r+1)*w], t.Data[r*cols+s*w:r*cols+(s+1)*w])
			}
			out = append(out, safetensors.Tensor{Name: name, Shape: []int{rows, w}, Data: part})
		}
	}
	return out, nil
}

// deepseekFromMoec converts moec's tensors of m, in arrange's order, to DeepSeek's, and
// says for each which of moec's it comes from: one-for-one renames, the rope rows permuted
// to interleaved pairs when interleave (DeepSeek-V2/V3's latent attention; DeepSeek-MoE's
// Llama attention rotates halves), and each layer's shared experts joined into one MLP
// (gate_proj, up_proj, down_proj) in the place of its first shared-expert tensor.
func deepseekFromMoec(ts []safetensors.Tensor, m *program.Model, interleave bool) ([]safetensors.Tensor, []string, error) {
	type joined struct {
		parts map[string][]safetensors.Tensor // w1, w3, w2 → one per shared expert, in order
		at    int
	}
	layers := map[string]*joined{}
	var order []string
	var out []safetensors.Tensor
	var from []string
	for _, t := range ts {
		g := moecShareds.FindStringSubmatch(t.Name)
		if g == nil {
			o := safetensors.Tensor{Name: deepseekNameFromMoec(t.Name), Shape: t.Shape, Data: t.Data}
			if interleave && deepseekRopeRows.MatchString(o.Name) {
				o = permuteRope(o, m, true)
			}
			out = append(out, o)
			from = append(from, t.Name)
			continue
		}
		j := layers[g[1]]
		if j == nil {
			j = &joined{parts: map[string][]safetensors.Tensor{}, at: len(out)}
			layers[g[1]] = j
			order = append(order, g[1])
			for _, p := range []string{"gate_proj", "up_proj", "down_proj"} {
				out = append(out, safetensors.Tensor{})
				from = append(from, g[1]+"block_sparse_moe.shared_experts.*."+sharedPart[p]+".weight")
			}
		}
		if want := fmt.Sprint(len(j.parts[g[3]])); g[2] != want {
			return nil, nil, fmt.Errorf("tensor %s: shared experts out of order (expected expert %s)", t.Name, want)
		}
		j.parts[g[3]] = append(j.parts[g[3]], t)
	}
	for _, prefix := range order {
		j := layers[prefix]
		for i, p := range []string{"gate_proj", "up_proj", "down_proj"} {
			parts := j.parts[sharedPart[p]]
			if len(parts) == 0 || len(parts) != len(j.parts["w1"]) {
				return nil, nil, fmt.Errorf("layer %s: shared experts with unequal sets of projections", prefix)
			}
			rows, cols := parts[0].Shape[0], parts[0].Shape[1]
			var data []float32
			shape := []int{rows * len(parts), cols}
			if p != "down_proj" {
				for _, x := range parts {
					data = append(data, x.Data...)
				}
			} else {
				shape = []int{rows, cols * len(parts)}
				data = make([]float32, 0, rows*cols*len(parts))
				for r := 0; r < rows; r++ {
					for _, x := range parts {
						data = append(data, x.Data[r*cols:(r+1)*cols]...)
					}
				}
			}
			out[j.at+i] = safetensors.Tensor{Name: prefix + "mlp.shared_experts." + p + ".weight", Shape: shape, Data: data}
		}
	}
	return out, from, nil
}

// deepseekLayoutFor reports whether m is a DeepSeek-V3 model as DeepseekV3ForCausalLM
// computes it (a model with latent attention is one only as DeepSeek), and when it is not,
// what it lacks.
func deepseekLayoutFor(m *program.Model) (candidate bool, unmet []string) {
	a := m.Attention
	if !a.LatentAttention() {
		return false, nil
	}
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	e := m.MoE
	if e == nil || e.Experts == 0 {
		return true, []string{"routed experts (DeepseekV3Config needs n_routed_experts)"}
	}
	v2 := deepseekV2Routing(e)
	need((e.Score == program.Sigmoid && e.AuxFreeBias > 0) || v2,
		"sigmoid scores with the auxiliary-loss-free selection bias (score = sigmoid, aux_free_bias > 0: DeepseekV3TopkRouter's noaux_tc), or softmax scores without it (DeepseekV2TopkRouter)")
	need(!v2 || !e.Normalize, "no renormalised top-k weights with softmax scores (DeepseekV2TopkRouter never renormalises)")
	need(!e.SharedGate && (e.SharedHidden == 0 || e.SharedHidden == e.ExpertHidden), "ungated shared experts as wide as the routed ones (shared_experts is one MLP of n_shared_experts · moe_intermediate_size)")
	need(e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias && !m.FFN.Bias, "a plain router and no FFN biases")
	need(e.SparsemixerEps == 0 && e.SwigluLimit == 0 && !e.GateInput, "no sparsemixer, clamped SwiGLU or gated expert inputs")
	need(e.Groups == 0 || (e.Experts%e.Groups == 0 && (v2 || e.Experts/e.Groups >= 2)), "groups that divide the experts (into groups of two or more with sigmoid scores: each group scores as its best two)")
	need(len(e.Layers) == 0 && e.Every <= 1 && !e.ParallelDense && !e.ParallelAttention, "MoE in every layer from first_dense on (first_k_dense_replace), no parallel dense FFN")
	swigluDecoderNeeds(m, need)
	need(a.QKRopeHeadDim%2 == 0, "an even qk_rope_head_dim")
	need(a.BiasQKV == a.BiasOut && !a.QKNorm && a.ClipQKV == 0, "attention biases on q_a_proj, kv_a_proj_with_mqa and o_proj or on none (attention_bias), no q/k norms or clipping")
	need(!a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && !a.Sinks && a.Window == 0 && a.FullEvery == 0 && a.NopeEvery == 0 && a.ChunkSize == 0 && !a.QKL2Norm && a.NopeTemperature == 0,
		"plain latent attention (no talking heads, sharing, sinks, windows or chunks)")
	return true, unmet
}

// deepseekConfig sets DeepseekV3Config's fields for m. The checkpoint's rope rows are
// interleaved pairs (rope_interleave = true), DeepSeek's own convention.
func deepseekConfig(cfg map[string]any, m *program.Model) {
	a, e := m.Attention, m.MoE
	delete(cfg, "head_dim") // DeepseekV3Config sets it to qk_rope_head_dim itself
	cfg["num_key_value_heads"] = a.Heads
	cfg["q_lora_rank"] = nil
	if a.QLoraRank > 0 {
		cfg["q_lora_rank"] = a.QLoraRank
	}
	cfg["kv_lora_rank"] = a.KVLoraRank
	cfg["qk_nope_head_dim"] = a.QKNopeHeadDim
	cfg["qk_rope_head_dim"] = a.QKRopeHeadDim
	cfg["v_head_dim"] = a.VHeadDim
	cfg["rope_interleave"] = true
	cfg["attention_bias"] = a.BiasQKV
	cfg["moe_intermediate_size"] = e.ExpertHidden
	cfg["n_routed_experts"] = e.Experts
	cfg["n_shared_experts"] = e.SharedExperts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["first_k_dense_replace"] = e.FirstDense
	cfg["norm_topk_prob"] = e.Normalize
	cfg["scoring_func"] = "sigmoid"
	cfg["topk_method"] = "noaux_tc"
	cfg["n_group"], cfg["topk_group"] = 1, 1
	if e.Groups > 0 {
		cfg["n_group"], cfg["topk_group"] = e.Groups, e.TopKGroups
	}
	cfg["routed_scaling_factor"] = floatField(e.RoutedScaleOrOne())
	cfg["aux_loss_alpha"] = floatField(e.BalanceLoss)
	cfg["seq_aux"] = false // moec's balance loss is per batch; DeepSeek's configs default to true
	cfg["num_nextn_predict_layers"] = 0
	if deepseekV2Routing(e) {
		// DeepseekV2ForCausalLM: the same tensors (no selection bias), adjacent rope pairs
		// always, softmax scores chosen greedily or within the best groups by their best
		// expert.
		cfg["model_type"], cfg["architectures"] = "deepseek_v2", []string{deepseekV2Class}
		delete(cfg, "scoring_func")
		delete(cfg, "rope_interleave")
		delete(cfg, "num_nextn_predict_layers")
		cfg["topk_method"] = "greedy"
		cfg["n_group"], cfg["topk_group"] = nil, nil
		if e.Groups > 0 {
			cfg["topk_method"] = "group_limited_greedy"
			cfg["n_group"], cfg["topk_group"] = e.Groups, e.TopKGroups
		}
	}
}

// deepseekV2Class is the transformers class of a DeepSeek model routed as DeepSeek-V2 is.
const deepseekV2Class = "DeepseekV2ForCausalLM"

// deepseekV2Routing reports whether e routes as DeepseekV2TopkRouter does: softmax scores
// without the selection bias.
func deepseekV2Routing(e *program.MoE) bool {
	return e != nil && e.Score == program.Softmax && e.AuxFreeBias == 0
}

// ropeInterleaved reports whether a DeepSeek config.json says its rope rows are
// interleaved pairs: rope_interleave, true when absent (DeepseekV3Config's default, and
// DeepSeek-V2 always rotates adjacent pairs).
func ropeInterleaved(config []byte) bool {
	var c struct {
		RopeInterleave *bool `json:"rope_interleave"`
	}
	if json.Unmarshal(config, &c) != nil || c.RopeInterleave == nil {
		return true
	}
	return *c.RopeInterleave
}

// deepseekNotes names the training settings of m that DeepseekV3Config has no field for, so
// that an import of the export trains with other ones (the forward pass is the same).
func deepseekNotes(m *program.Model) []string {
	var notes []string
	if e := m.MoE; e.AuxFreeBias != 0.001 {
		notes = append(notes, fmt.Sprintf("aux_free_bias = %v, the selection bias's update rate, has no config.json field; an import takes DeepSeek-V3's 0.001", e.AuxFreeBias))
	}
	if e := m.MoE; e.ZLoss > 0 {
		notes = append(notes, fmt.Sprintf("z_loss = %v has no DeepseekV3Config field; an import trains without it", e.ZLoss))
	}
	return notes
}
