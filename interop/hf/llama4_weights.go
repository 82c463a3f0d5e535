package hf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Llama 4's tensors (transformers' Llama4ForCausalLM) differ from moec's in three ways,
// which llama4ToMoec undoes on import and llama4FromMoec does on export:
//   - names: feed_forward.router (moec's block_sparse_moe.gate), feed_forward.shared_expert
//     (shared_experts.0), feed_forward.{gate,up,down}_proj in dense layers (mlp.);
//   - the routed experts are fused: experts.gate_up_proj [E, D, 2I] holds each expert's
//     gate (columns [0, I)) and up (columns [I, 2I)) projections as x·W (not x·Wᵀ), and
//     experts.down_proj [E, I, D] its down projection the same way (Llama4TextExperts:
//     bmm(x, gate_up_proj), chunk(2, dim=-1), bmm(up·act(gate), down_proj));
//   - rotary pairs: Llama 4 rotates adjacent dimensions (2j, 2j+1) of each head as one
//     complex number (apply_rotary_emb's view_as_complex), moec pairs j with j + head_dim/2
//     (rotate-half): the rows of q_proj and k_proj are permuted within each head, as
//     transformers' own Llama conversion permutes Meta's checkpoints. Scores q·k are the
//     same under one permutation of both, and the unscaled q/k norms (use_qk_norm) do not
//     see the order.
var (
	llama4FeedForward = regexp.MustCompile(`^(model\.layers\.\d+\.)feed_forward\.(.+)$`)
	moecLlama4FFN     = regexp.MustCompile(`^(model\.layers\.\d+\.)(mlp\.(gate_proj|up_proj|down_proj)\.weight|block_sparse_moe\.(gate\.weight|shared_experts\.0\.(w1|w2|w3)\.weight|experts\.(\d+)\.(w1|w2|w3)\.weight))$`)
)

// llama4Renames are the feed-forward tensors renamed one for one, Llama 4's name (after
// feed_forward.) to moec's (after the layer prefix).
var llama4Renames = map[string]string{
	"router.weight":                  "block_sparse_moe.gate.weight",
	"shared_expert.gate_proj.weight": "block_sparse_moe.shared_experts.0.w1.weight",
	"shared_expert.up_proj.weight":   "block_sparse_moe.shared_experts.0.w3.weight",
	"shared_expert.down_proj.weight": "block_sparse_moe.shared_experts.0.w2.weight",
	"gate_proj.weight":               "mlp.gate_proj.weight",
	"up_proj.weight":                 "mlp.up_proj.weight",
	"down_proj.weight":               "mlp.down_proj.weight",
}

// halvesFromPairs permutes the rows of a q or k projection (rows of width cols, heads of
// hd rows) from adjacent rotary pairs to rotate-half ones: row j of a head takes row 2j,
// row j + hd/2 takes row 2j + 1. pairsFromHalves is its inverse.
func halvesFromPairs(w []float32, hd, cols int) []float32 {
	out := make([]float32, len(w))
	half := hd / 2
	for h := 0; h < len(w)/(hd*cols); h++ {
		for j := 0; j < half; j++ {
			base := h * hd
			copy(out[(base+j)*cols:(base+j+1)*cols], w[(base+2*j)*cols:(base+2*j+1)*cols])
			copy(out[(base+half+j)*cols:(base+half+j+1)*cols], w[(base+2*j+1)*cols:(base+2*j+2)*cols])
		}
	}
	return out
}

func pairsFromHalves(w []float32, hd, cols int) []float32 {
	out := make([]float32, len(w))
	half := hd / 2
	for h := 0; h < len(w)/(hd*cols); h++ {
		for j := 0; j < half; j++ {
			base := h * hd
			copy(out[(base+2*j)*cols:(base+2*j+1)*cols], w[(base+j)*cols:(base+j+1)*cols])
			copy(out[(base+2*j+1)*cols:(base+2*j+2)*cols], w[(base+half+j)*cols:(base+half+j+1)*cols])
		}
	}
	return out
}

// isRotaryProjection reports whether name is a q or k projection's weight.
func isRotaryProjection(name string) bool {
	return strings.HasSuffix(name, ".self_attn.q_proj.weight") || strings.HasSuffix(name, ".self_attn.k_proj.weight")
}

// llama4ToMoec converts the tensors of a Llama 4 folder to moec's: renamed, the fused
// experts split per expert and transposed, the q/k rows permuted to rotate-half pairs.
func llama4ToMoec(ts []safetensors.Tensor, m *program.Model) ([]safetensors.Tensor, error) {
	hd := int(m.Attention.HeadDim)
	out := make([]safetensors.Tensor, 0, len(ts))
	for _, t := range ts {
		if isRotaryProjection(t.Name) {
			if len(t.Shape) != 2 || t.Shape[0]%hd != 0 || hd%2 != 0 {
				return nil, fmt.Errorf("%s has shape %v: not heads of head_dim %d", t.Name, t.Shape, hd)
			}
			t.Data = halvesFromPairs(t.Data, hd, t.Shape[1])
			out = append(out, t)
			continue
		}
		g := llama4FeedForward.FindStringSubmatch(t.Name)
		if g == nil {
			out = append(out, t)
			continue
		}
		prefix, rest := g[1], g[2]
		if to, ok := llama4Renames[rest]; ok {
			t.Name = prefix + to
			out = append(out, t)
			continue
		}
		switch rest {
		case "experts.gate_up_proj":
			if len(t.Shape) != 3 || t.Shape[2]%2 != 0 {
				return nil, fmt.Errorf("%s has shape %v, want [experts, d_model, 2·expert_hidden]", t.Name, t.Shape)
			}
			E, D, I := t.Shape[0], t.Shape[1], t.Shape[2]/2
			for e := 0; e < E; e++ {
				gate, up := make([]float32, I*D), make([]float32, I*D)
				for d := 0; d < D; d++ {
					row := t.Data[(e*D+d)*2*I : (e*D+d+1)*2*I]
					for i := 0; i < I; i++ {
						gate[i*D+d], up[i*D+d] = row[i], row[I+i]
					}
				}
				p := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", prefix, e)
				out = append(out, safetensors.Tensor{Name: p + "w1.weight", Shape: []int{I, D}, Data: gate},
					safetensors.Tensor{Name: p + "w3.weight", Shape: []int{I, D}, Data: up})
			}
		case "experts.down_proj":
			if len(t.Shape) != 3 {
				return nil, fmt.Errorf("%s has shape %v, want [experts, expert_hidden, d_model]", t.Name, t.Shape)
			}
			E, I, D := t.Shape[0], t.Shape[1], t.Shape[2]
			for e := 0; e < E; e++ {
				down := make([]float32, D*I)
				for i := 0; i < I; i++ {
					for d := 0; d < D; d++ {
						down[d*I+i] = t.Data[(e*I+i)*D+d]
					}
				}
				out = append(out, safetensors.Tensor{Name: fmt.Sprintf("%sblock_sparse_moe.experts.%d.w2.weight", prefix, e), Shape: []int{D, I}, Data: down})
			}
		default:
			return nil, fmt.Errorf("%s is not a tensor of Llama4ForCausalLM's feed-forward layers", t.Name)
		}
	}
	return out, nil
}

// llama4FromMoec converts moec's tensors of m, in arrange's order, to Llama 4's, and says
// for each which of moec's it comes from. A layer's fused experts take the place of its
// first expert tensor.
func llama4FromMoec(ts []safetensors.Tensor, m *program.Model) ([]safetensors.Tensor, []string, error) {
	hd := int(m.Attention.HeadDim)
	type fused struct {
		gate, up, down map[int]safetensors.Tensor
		at             int // index in out
	}
	layers := map[string]*fused{}
	var out []safetensors.Tensor
	var from []string
	for _, t := range ts {
		g := moecLlama4FFN.FindStringSubmatch(t.Name)
		switch {
		case isRotaryProjection(t.Name):
			out = append(out, safetensors.Tensor{Name: t.Name, Shape: t.Shape, Data: pairsFromHalves(t.Data, hd, t.Shape[1])})
			from = append(from, t.Name)
		case g == nil:
			out = append(out, t)
			from = append(from, t.Name)
		case g[6] != "": // a routed expert's w1, w2 or w3
			f := layers[g[1]]
			if f == nil {
				f = &fused{gate: map[int]safetensors.Tensor{}, up: map[int]safetensors.Tensor{}, down: map[int]safetensors.Tensor{}, at: len(out)}
				layers[g[1]] = f
				out = append(out, safetensors.Tensor{}, safetensors.Tensor{}) // gate_up_proj, down_proj
				from = append(from, g[1]+"block_sparse_moe.experts.*.w1.weight + w3.weight", g[1]+"block_sparse_moe.experts.*.w2.weight")
			}
			e, _ := strconv.Atoi(g[6]) // the pattern's digits
			switch g[7] {
			case "w1":
				f.gate[e] = t
			case "w3":
				f.up[e] = t
			default:
				f.down[e] = t
			}
		default:
			rest := g[2]
			for hf, moec := range llama4Renames {
				if moec == rest {
					rest = "feed_forward." + hf
					break
				}
			}
			out = append(out, safetensors.Tensor{Name: g[1] + rest, Shape: t.Shape, Data: t.Data})
			from = append(from, t.Name)
		}
	}
	for prefix, f := range layers {
		E := len(f.gate)
		if E == 0 || len(f.up) != E || len(f.down) != E {
			return nil, nil, fmt.Errorf("layer %s has %d gate, %d up and %d down expert projections", prefix, len(f.gate), len(f.up), len(f.down))
		}
		I, D := f.gate[0].Shape[0], f.gate[0].Shape[1]
		gateUp, down := make([]float32, E*D*2*I), make([]float32, E*I*D)
		for e := 0; e < E; e++ {
			gt, ut, dt := f.gate[e], f.up[e], f.down[e]
			if len(gt.Data) != I*D || len(ut.Data) != I*D || len(dt.Data) != D*I {
				return nil, nil, fmt.Errorf("expert %d of layer %s: projections of unequal sizes", e, prefix)
			}
			for i := 0; i < I; i++ {
				for d := 0; d < D; d++ {
					gateUp[(e*D+d)*2*I+i] = gt.Data[i*D+d]
					gateUp[(e*D+d)*2*I+I+i] = ut.Data[i*D+d]
					down[(e*I+i)*D+d] = dt.Data[d*I+i]
				}
			}
		}
		out[f.at] = safetensors.Tensor{Name: prefix + "feed_forward.experts.gate_up_proj", Shape: []int{E, D, 2 * I}, Data: gateUp}
		out[f.at+1] = safetensors.Tensor{Name: prefix + "feed_forward.experts.down_proj", Shape: []int{E, I, D}, Data: down}
	}
	return out, from, nil
}

// llama4LayoutFor reports whether m is a Llama 4 language model as Llama4ForCausalLM
// computes it (a model that gates its experts' inputs is one only as Llama 4), and when it
// is not, what it lacks.
func llama4LayoutFor(m *program.Model) (candidate bool, unmet []string) {
	e := m.MoE
	if e == nil || e.Experts == 0 || !e.GateInput {
		return false, nil
	}
	a := m.Attention
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	need(e.Score == program.Sigmoid && !e.Normalize, "a sigmoid router without renormalisation (score = sigmoid, normalize = false)")
	need(e.SharedExperts == 1 && !e.SharedGate && (e.SharedHidden == 0 || e.SharedHidden == e.ExpertHidden), "one ungated shared expert as wide as the routed ones")
	need(e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias && !m.FFN.Bias, "a plain router and no FFN biases")
	need(e.RoutedScaleOrOne() == 1 && e.SparsemixerEps == 0 && e.Groups == 0 && e.AuxFreeBias == 0 && e.SwigluLimit == 0, "plain top-k routing (no routed_scale, sparsemixer, groups, bias balancing or clamped SwiGLU)")
	need(len(e.Layers) == 0 && e.FirstDense == 0 && !e.ParallelDense && !e.ParallelAttention, "MoE layers chosen by a step (every), no parallel dense FFN")
	swigluDecoderNeeds(m, need)
	need(!a.BiasQKV && !a.BiasOut && !a.QKNorm && a.ClipQKV == 0, "no attention biases, learned q/k norms or clipping")
	need(!a.MLA && !a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && !a.Sinks && a.Window == 0 && a.FullEvery == 0, "plain grouped-query attention (no MLA, talking heads, sharing, sinks or windows)")
	need(a.HeadDim%2 == 0, "an even head_dim")
	return true, unmet
}

// llama4Config sets Llama4TextConfig's fields for m.
func llama4Config(cfg map[string]any, m *program.Model) {
	a, e := m.Attention, m.MoE
	cfg["intermediate_size"] = e.ExpertHidden
	cfg["intermediate_size_mlp"] = m.FFN.Hidden
	cfg["num_local_experts"] = e.Experts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["interleave_moe_layer_step"] = max(e.Every, 1)
	cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
	cfg["router_jitter_noise"] = floatField(0)
	cfg["attention_bias"] = false
	rope := make([]int, m.Layers)
	for i := range rope {
		if a.NopeEvery == 0 || (i+1)%a.NopeEvery != 0 {
			rope[i] = 1
		}
	}
	cfg["no_rope_layers"] = rope
	cfg["attention_chunk_size"] = nil
	if a.ChunkSize > 0 {
		cfg["attention_chunk_size"] = a.ChunkSize
	}
	cfg["use_qk_norm"] = a.QKL2Norm
	cfg["attn_temperature_tuning"] = a.NopeTemperature > 0
	cfg["attn_scale"] = floatField(a.NopeTemperature)
	cfg["floor_scale"] = max(a.NopeTemperatureFloor, 1)
}
