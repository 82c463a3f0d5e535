package hf

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// Layout is a tensor naming scheme of a transformers class that moec's runtime can carry
// weights for, or moec's own.
type Layout string

const (
	LayoutLlama    Layout = "llama"     // LlamaForCausalLM: dense
	LayoutQwen3    Layout = "qwen3"     // Qwen3ForCausalLM: dense with per-head q/k norms
	LayoutMixtral  Layout = "mixtral"   // MixtralForCausalLM
	LayoutQwen3MoE Layout = "qwen3_moe" // Qwen3MoeForCausalLM: experts under mlp.
	LayoutMoec     Layout = "moec"      // moec's names; no transformers class
)

// classOf is the transformers class of each layout.
var classOf = map[Layout]string{
	LayoutLlama: "LlamaForCausalLM", LayoutQwen3: "Qwen3ForCausalLM",
	LayoutMixtral: "MixtralForCausalLM", LayoutQwen3MoE: "Qwen3MoeForCausalLM",
}

// moecNames rewrites between moec's names (runtime/nn, Mixtral-style block_sparse_moe) and
// the Qwen3-MoE names. Dense layers' mlp.gate_proj etc. are the same in both.
var (
	qwenExpert = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.(gate\.weight|experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight)$`)
	moecExpert = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.(gate\.weight|experts\.\d+\.(w1|w3|w2)\.weight)$`)
	expertOf   = regexp.MustCompile(`^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.`)
)

var qwenToMoec = strings.NewReplacer("gate_proj", "w1", "up_proj", "w3", "down_proj", "w2")
var moecToQwen = strings.NewReplacer(".w1.", ".gate_proj.", ".w3.", ".up_proj.", ".w2.", ".down_proj.")

// toMoec returns the moec name of a tensor of layout l.
func toMoec(l Layout, name string) string {
	if l != LayoutQwen3MoE {
		return name
	}
	if m := qwenExpert.FindStringSubmatch(name); m != nil {
		return m[1] + "block_sparse_moe." + qwenToMoec.Replace(m[2])
	}
	return name
}

// fromMoec returns the name layout l gives moec's tensor name.
func fromMoec(l Layout, name string) string {
	if l != LayoutQwen3MoE {
		return name
	}
	if m := moecExpert.FindStringSubmatch(name); m != nil {
		return m[1] + "mlp." + moecToQwen.Replace(m[2])
	}
	return name
}

// shape is a tensor's name and dimensions.
type shape struct {
	name string
	dims []int
}

// expected lists the tensors a checkpoint of m has in layout l (moec's names), in the order
// transformers' state dict has them. It is written from the transformers classes, apart
// from runtime/nn, so that the two can check each other.
func expected(m *program.Model, l Layout) []shape {
	a := m.Attention
	d := int(m.DModel)
	v := int(m.PaddedVocab())
	hd := int(a.HeadDim)
	var out []shape
	add := func(name string, dims ...int) { out = append(out, shape{name, dims}) }
	add("model.embed_tokens.weight", v, d)
	for i := 0; i < m.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", d)
		for _, proj := range []struct {
			name string
			rows int
		}{{"q_proj", a.Heads * hd}, {"k_proj", a.KVHeads * hd}, {"v_proj", a.KVHeads * hd}} {
			add(p+"self_attn."+proj.name+".weight", proj.rows, d)
			if a.BiasQKV {
				add(p+"self_attn."+proj.name+".bias", proj.rows)
			}
		}
		add(p+"self_attn.o_proj.weight", d, a.Heads*hd)
		if a.BiasOut {
			add(p+"self_attn.o_proj.bias", d)
		}
		if a.QKNorm {
			add(p+"self_attn.q_norm.weight", hd)
			add(p+"self_attn.k_norm.weight", hd)
		}
		add(p+"post_attention_layernorm.weight", d)
		if !m.IsMoELayer(i) {
			f := int(m.FFN.Hidden)
			for _, proj := range []string{"gate_proj", "up_proj", "down_proj"} {
				rows, cols := f, d
				if proj == "down_proj" {
					rows, cols = d, f
				}
				add(p+"mlp."+proj+".weight", rows, cols)
				if m.FFN.Bias {
					add(p+"mlp."+proj+".bias", rows)
				}
			}
			continue
		}
		e := m.MoE
		add(p+"block_sparse_moe.gate.weight", e.Experts, d)
		h := int(e.ExpertHidden)
		for x := 0; x < e.Experts; x++ {
			ep := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, x)
			add(ep+"w1.weight", h, d)
			add(ep+"w2.weight", d, h)
			add(ep+"w3.weight", h, d)
		}
	}
	add("model.norm.weight", d)
	if !m.TieEmbeddings {
		add("lm_head.weight", v, d)
	}
	return out
}

// layoutFor chooses the transformers layout that holds m exactly, or LayoutMoec and the
// features that no transformers class of those four has.
func layoutFor(m *program.Model) (Layout, []string) {
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
	gap(m.MTPDepth > 0, "multi-token prediction (mtp_depth)")
	gap(a.MLA, "multi-head latent attention (transformers' DeepSeek classes are not among those moec writes)")
	gap(a.TalkingHeads, "talking heads")
	gap(a.ShareWeights < 1, "stochastic attention-weight sharing (share_weights < 1)")
	gap(a.ShareKV > 1, "cross-layer K/V sharing (share_kv > 1)")
	gap(a.Sinks, "attention sinks")
	gap(a.QKNorm && a.QKNormFull, "q/k norms over the whole projections (qk_norm = full, OLMoE's; the classes moec writes norm per head)")
	gap(a.BiasQKV != a.BiasOut, "a bias on Q/K/V but not on the output, or the reverse (attention_bias sets both)")
	gap(m.FFN.Activation != program.SwiGLU && m.FFN.Activation != program.GeGLU, fmt.Sprintf("ffn activation %s (the classes gate their FFNs: swiglu or geglu)", m.FFN.Activation))
	if e := m.MoE; e != nil && e.Experts > 0 {
		gap(e.Router == program.RouteTokenEmbedding, "token-embedding routing (router = token_embedding)")
		gap(e.Activation != m.FFN.Activation, "experts with another activation than the dense FFN")
		gap(e.ExpertBias || m.FFN.Bias, "biases in the FFNs of an MoE model")
		gap(e.RouterBias, "a router bias")
		gap(e.Score != program.Softmax, fmt.Sprintf("score = %s (the classes route with a softmax)", e.Score))
		gap(e.SharedExperts > 0, "shared experts")
		gap(e.SharedGate && e.SharedExperts > 0, "a gated shared expert (shared_gate, Qwen2-MoE's; not among the classes moec writes)")
		gap(e.ParallelDense, "a dense FFN in parallel with the experts (parallel_dense)")
		gap(e.Groups > 0, "node-limited routing (groups)")
		gap(e.AuxFreeBias > 0, "auxiliary-loss-free bias balancing")
		gap(len(e.Layers) > 0 || e.FirstDense > 0, "MoE layers chosen by a list or first_dense (the classes choose them by a step)")
		if len(gaps) > 0 {
			return LayoutMoec, gaps
		}
		// Mixtral always renormalises its top-k and has no q/k norms and MoE in every layer;
		// Qwen3-MoE has q/k norms, an optional renormalisation and MoE every N layers.
		if !a.QKNorm && e.Normalize && (e.Every <= 1) && !a.BiasQKV && m.FFN.Activation == program.SwiGLU {
			return LayoutMixtral, nil
		}
		if a.QKNorm && m.FFN.Activation == program.SwiGLU && a.Window == 0 {
			return LayoutQwen3MoE, nil
		}
		return LayoutMoec, []string{"this combination of q/k norms, top-k renormalisation, MoE step and attention bias (Mixtral: no q/k norm, renormalised, every layer, no bias; Qwen3-MoE: q/k norms)"}
	}
	gap(a.Window > 0, "a sliding window in a dense model")
	if len(gaps) > 0 {
		return LayoutMoec, gaps
	}
	if a.QKNorm {
		return LayoutQwen3, nil
	}
	return LayoutLlama, nil
}
