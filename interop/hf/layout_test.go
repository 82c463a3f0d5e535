package hf

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// transformersTensors lists the tensors of m as the transformers classes moec writes hold
// them (moec's names), in their state dicts' order: written from those classes, apart
// from the parameter walker, so that the two check each other.
func transformersTensors(m *program.Model) []shape {
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
			// Qwen3's norms are per head; OLMoE's (qk_norm = full) span the whole projections.
			qw, kw := hd, hd
			if a.QKNormFull {
				qw, kw = a.Heads*hd, a.KVHeads*hd
			}
			add(p+"self_attn.q_norm.weight", qw)
			add(p+"self_attn.k_norm.weight", kw)
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
		// Qwen2-MoE's shared expert (gate_proj, up_proj, down_proj) and the Linear(d, 1)
		// that gates it.
		sh := int(e.SharedHidden)
		if sh == 0 {
			sh = h
		}
		for x := 0; x < e.SharedExperts; x++ {
			sp := fmt.Sprintf("%sblock_sparse_moe.shared_experts.%d.", p, x)
			add(sp+"w1.weight", sh, d)
			add(sp+"w3.weight", sh, d)
			add(sp+"w2.weight", d, sh)
		}
		if e.SharedGate && e.SharedExperts > 0 {
			add(p+"block_sparse_moe.shared_expert_gate.weight", 1, d)
		}
	}
	add("model.norm.weight", d)
	if !m.TieEmbeddings {
		add("lm_head.weight", v, d)
	}
	return out
}

// TestExpectedIsTheTransformersLayout: for every tiny model that has a transformers layout,
// the walker's list (expected) is the list written from the transformers classes, names,
// shapes and order.
func TestExpectedIsTheTransformersLayout(t *testing.T) {
	compared := 0
	for _, name := range []string{"tiny_mixtral", "tiny_llama", "tiny_qwen3_moe", "tiny_gated", "tiny_olmoe", "tiny_qwen2_moe", "tiny_hunyuan"} {
		m := tinyModel(t, name)
		if l, _ := layoutFor(m); l == LayoutMoec {
			continue
		}
		got, err := expected(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := transformersTensors(m); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the walker lists\n%v\nthe transformers classes hold\n%v", name, got, want)
		}
		compared++
	}
	if compared < 4 {
		t.Fatalf("only %d tiny models have a transformers layout", compared)
	}
}

// TestArrangeResolvesDefaults: a model built in Go with head_dim, kv_heads and
// expert_hidden left to their defaults is exported with the sizes the runtime gives them,
// not with zero-width projections.
func TestArrangeResolvesDefaults(t *testing.T) {
	m := *tinyModel(t, "tiny_mixtral")
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.HeadDim, m.Attention.KVHeads, m.MoE.ExpertHidden = 0, 0, 0
	if l, gaps := layoutFor(&m); l != LayoutMixtral {
		t.Fatalf("layout %s: %v", l, gaps)
	}
	net := tinyNet(t, &m)
	var ts []safetensors.Tensor
	for _, p := range net.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	got, err := arrange(ts, &m)
	if err != nil {
		t.Fatalf("the runtime's own tensors do not arrange: %v", err)
	}
	if len(got) != len(ts) {
		t.Errorf("arranged %d of %d tensors", len(got), len(ts))
	}
	hd := int(m.DModel) / m.Attention.Heads
	for _, x := range got {
		if x.Name == "model.layers.0.self_attn.q_proj.weight" && fmt.Sprint(x.Shape) != fmt.Sprint([]int{m.Attention.Heads * hd, int(m.DModel)}) {
			t.Errorf("q_proj %v", x.Shape)
		}
	}
}
