package hf

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/parse"
	"github.com/moec-dev/moec/runtime/nn"
)

// Tiny HunYuan models, written as moec imports the classes' configs (shared_hidden, the
// balance loss and dropless capacity explicit), so that export and import give the same
// model back: Hunyuan-A13B's class (renormalised top-2, tied embeddings, a head_dim of its
// own) and Hunyuan-Large's (cross-layer attention over pairs of layers, a top-1 expert
// weighed by its probability, a shared MLP two experts wide), and Hunyuan-Large's with a
// renormalised top-2 and groups of three layers sharing K/V.
const hunyuanModels = `
model tiny_hunyuan_a13b {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-5; rope_base = 1e6; tie_embeddings = true
  attention { heads = 4; kv_heads = 2; head_dim = 16; qk_norm = true; qk_norm_after_rope = true }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2; shared_experts = 1; shared_hidden = 24; normalize = true; capacity_factor = dropless; balance_loss = 0.001 }
}
model tiny_hunyuan_large {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16; norm_eps = 1e-5; rope_base = 10000
  attention { heads = 4; kv_heads = 2; qk_norm = true; qk_norm_after_rope = true; share_kv = 2 }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 1; shared_experts = 1; shared_hidden = 48; normalize = false; capacity_factor = dropless; balance_loss = 0.001 }
}
model tiny_hunyuan_large_top2 {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16; norm_eps = 1e-5; rope_base = 10000
  attention { heads = 4; kv_heads = 4; qk_norm = true; qk_norm_after_rope = true; share_kv = 3 }
  ffn { hidden = 16; activation = swiglu }
  moe { experts = 3; top_k = 2; shared_experts = 1; shared_hidden = 16; normalize = true; capacity_factor = dropless; balance_loss = 0.001 }
}
`

func hunyuanModel(t *testing.T, name string) *program.Model {
	t.Helper()
	f, ds := parse.File("hunyuan.moe", []byte(hunyuanModels))
	prog, ds2 := check.Check(f)
	if ds = append(ds, ds2...); ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	return prog.Models[name]
}

// TestHunyuanComputesAsTencent: tiny HunYuan models' logits from moec's runtime equal those
// of an independent torch forward written from Tencent's modeling_hunyuan.py and
// transformers' modeling_hunyuan_v1_moe.py (testdata/hunyuan_forward.py) on the same
// weights, exported in the classes' layouts: q/k norms after rotary positions, the owner's
// unrotated K/V reused with each layer's own key norm, the top-1 probability weight, the
// shared MLP. Hunyuan-A13B's export is also run through transformers' own class where it
// is installed.
func TestHunyuanComputesAsTencent(t *testing.T) {
	py, withTransformers := torchTransformers(t)
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	text := make([]string, len(ids))
	for i, id := range ids {
		text[i] = fmt.Sprint(id)
	}
	var checks logitChecks // every reference in one interpreter: one torch import
	folders := t.TempDir()
	for _, tc := range []struct {
		model  string
		layout Layout
	}{
		{"tiny_hunyuan_a13b", LayoutHunyuanMoE},
		{"tiny_hunyuan_large", LayoutHunyuan},
		{"tiny_hunyuan_large_top2", LayoutHunyuan},
	} {
		m := hunyuanModel(t, tc.model)
		dir, _ := saveCheckpoint(t, m)
		out := filepath.Join(folders, tc.model)
		man, err := Export(dir, out)
		if err != nil {
			t.Fatalf("%s: %v", tc.model, err)
		}
		if man.Layout != tc.layout {
			t.Fatalf("%s: layout %s (%v), want %s", tc.model, man.Layout, man.Unsupported, tc.layout)
		}
		want, err := tinyNet(t, m).Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.model, err)
		}
		checks.add(tc.model+"_forward", "hunyuan_forward.py", out, strings.Join(text, ","), want)
		if tc.layout == LayoutHunyuanMoE && withTransformers {
			checks.add(tc.model+"_transformers", "hf_transformers.py", out, strings.Join(text, ","), want)
		}
	}
	checks.run(t, py)
}

// TestHunyuanExportNames: the exported tensors carry the classes' names, and a layer that
// reuses the layer before's K/V has no k_proj or v_proj but its own key_layernorm.
func TestHunyuanExportNames(t *testing.T) {
	m := hunyuanModel(t, "tiny_hunyuan_large")
	dir, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string][]int{}
	for _, e := range man.Tensors {
		names[e.Name] = e.Shape
	}
	for name, shape := range map[string][]int{
		"model.layers.0.self_attn.k_proj.weight":          {16, 32},
		"model.layers.1.self_attn.query_layernorm.weight": {8},
		"model.layers.1.self_attn.key_layernorm.weight":   {8},
		"model.layers.1.mlp.gate.wg.weight":               {4, 32},
		"model.layers.1.mlp.shared_mlp.gate_proj.weight":  {48, 32},
		"model.layers.1.mlp.shared_mlp.down_proj.weight":  {32, 48},
		"model.layers.3.mlp.experts.3.up_proj.weight":     {24, 32},
		"model.layers.3.mlp.experts.0.down_proj.weight":   {32, 24},
		"lm_head.weight": {300, 32},
	} {
		if !slices.Equal(names[name], shape) {
			t.Errorf("%s: shape %v, want %v", name, names[name], shape)
		}
	}
	for _, absent := range []string{"model.layers.1.self_attn.k_proj.weight", "model.layers.3.self_attn.v_proj.weight"} {
		if _, ok := names[absent]; ok {
			t.Errorf("%s exported: the layer reuses layer before's K/V", absent)
		}
	}
	if notes := strings.Join(man.Notes, "; "); !strings.Contains(notes, "trust_remote_code") {
		t.Errorf("the notes do not say how Tencent's remote code is loaded: %s", notes)
	}
	cfg, err := os.ReadFile(filepath.Join(out, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"modeling_hunyuan.HunYuanForCausalLM"`, `"use_cla": true`, `"cla_share_factor": 2`, `"num_shared_expert": 2`, `"alpha": 1.0`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("%s lacks %s:\n%s", ConfigFile, want, cfg)
		}
	}
	for name := range names {
		if strings.Contains(name, "block_sparse_moe") || strings.Contains(name, "q_norm") || strings.Contains(name, "k_norm") {
			t.Errorf("%s kept moec's name", name)
		}
	}
}

// TestHunyuanLayoutChoice: the published configs go out as the classes they came from; a
// model one feature away from both goes out in moec's layout with what each needs named.
func TestHunyuanLayoutChoice(t *testing.T) {
	for file, want := range map[string]Layout{"hunyuan-a13b.json": LayoutHunyuanMoE, "hunyuan-large.json": LayoutHunyuan} {
		res, err := ImportConfig(readConfig(t, file), fixtureOptions(file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got, gaps := layoutFor(res.Model); got != want {
			t.Errorf("%s: layout %s (%v), want %s", file, got, gaps, want)
		}
	}
	for _, tc := range []struct {
		model  string
		change func(m *program.Model)
		want   Layout
		named  string
	}{
		// A renormalised top-1 without cross-layer attention is transformers' class.
		{"tiny_hunyuan_large", func(m *program.Model) { m.Attention.ShareKV, m.MoE.Normalize, m.MoE.SharedHidden = 1, true, 24 }, LayoutHunyuanMoE, ""},
		{"tiny_hunyuan_large", func(m *program.Model) { m.MoE.Normalize = true }, LayoutMoec, "a top-1 expert weighed by its probability"},
		{"tiny_hunyuan_large", func(m *program.Model) { m.Attention.HeadDim = 16 }, LayoutMoec, "head_dim = d_model / heads"},
		{"tiny_hunyuan_a13b", func(m *program.Model) { m.MoE.Normalize = false }, LayoutMoec, "HunYuanMoEV1ForCausalLM needs [a renormalised top-k"},
		{"tiny_hunyuan_a13b", func(m *program.Model) { m.MoE.SharedGate = true }, LayoutMoec, "one ungated shared MLP"},
		{"tiny_hunyuan_a13b", func(m *program.Model) { m.MoE.ExpertHidden = 16 }, LayoutMoec, "experts as wide as ffn.hidden"},
		{"tiny_hunyuan_a13b", func(m *program.Model) { m.MoE.Every = 2 }, LayoutMoec, "MoE in every layer"},
		{"tiny_hunyuan_a13b", func(m *program.Model) {
			m.RopeScaling = &program.RopeScaling{Type: program.RopeLinear, Factor: 2}
		}, LayoutMoec, "without rope_scaling"},
	} {
		m := hunyuanModel(t, tc.model)
		tc.change(m)
		got, gaps := layoutFor(m)
		if got != tc.want || (tc.named != "" && !strings.Contains(strings.Join(gaps, "; "), tc.named)) {
			t.Errorf("%s changed: layout %s (%v), want %s naming %q", tc.model, got, gaps, tc.want, tc.named)
		}
	}
}

// TestHunyuanLargeTop1 reads Hunyuan-Large's top-1 router as Tencent's top1gating computes
// it (the expert weighed by its softmax probability) and Hunyuan-A13B's as transformers'
// HunYuanMoEV1Gate does (always renormalised).
func TestHunyuanLargeTop1(t *testing.T) {
	for _, tc := range []struct {
		file      string
		edits     map[string]any
		normalize bool
	}{
		{"hunyuan-large.json", nil, false},
		{"hunyuan-large.json", map[string]any{"moe_topk": 2}, true},
		{"hunyuan-a13b.json", map[string]any{"moe_topk": 1}, true},
	} {
		res, err := ImportConfig(editedConfig(t, tc.file, tc.edits), fixtureOptions(tc.file))
		if err != nil {
			t.Fatalf("%s %v: %v", tc.file, tc.edits, err)
		}
		if res.Model.MoE.Normalize != tc.normalize {
			t.Errorf("%s %v: normalize = %v, want %v", tc.file, tc.edits, res.Model.MoE.Normalize, tc.normalize)
		}
	}
}

// TestHunyuanV5RopeParameters: transformers 5 saves HunYuan's NTK alpha as rope_parameters
// (rope_theta inside, the factor beside it unread); it resolves into the same base as the
// v4 rope_scaling, and a rope_theta inside that contradicts the config's is refused.
func TestHunyuanV5RopeParameters(t *testing.T) {
	v5 := map[string]any{"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0}
	res, err := ImportConfig(editedConfig(t, "hunyuan-a13b.json", map[string]any{"rope_scaling": nil, "rope_theta": nil, "rope_parameters": v5}), fixtureOptions("hunyuan-a13b.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 10000 * math.Pow(1000, 128.0/126); res.Model.RopeBase != want || res.Model.RopeScaling != nil {
		t.Errorf("rope_base %v scaling %+v, want %v and none", res.Model.RopeBase, res.Model.RopeScaling, want)
	}
	_, err = ImportConfig(editedConfig(t, "hunyuan-a13b.json", map[string]any{"rope_scaling": nil, "rope_theta": 5000.0, "rope_parameters": v5}), fixtureOptions("hunyuan-a13b.json"))
	if err == nil || !strings.Contains(err.Error(), "differs from the config's rope_theta") {
		t.Errorf("contradicting rope_theta: err = %v", err)
	}
}

// TestHunyuanLargeDefaults: Tencent's HunYuanConfig defaults use_qk_norm and
// use_mixed_mlp_moe to false, so a Hunyuan-Large config without them has neither;
// transformers' HunYuanMoEV1 has both whatever its config says.
func TestHunyuanLargeDefaults(t *testing.T) {
	drop := map[string]any{"use_qk_norm": nil, "use_mixed_mlp_moe": nil}
	large, err := ImportConfig(editedConfig(t, "hunyuan-large.json", drop), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if large.Model.Attention.QKNorm || large.Model.MoE.SharedExperts != 0 {
		t.Errorf("hunyuan without use_qk_norm, use_mixed_mlp_moe: qk_norm %v, shared experts %d; want neither",
			large.Model.Attention.QKNorm, large.Model.MoE.SharedExperts)
	}
	a13b, err := ImportConfig(editedConfig(t, "hunyuan-a13b.json", drop), fixtureOptions("hunyuan-a13b.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !a13b.Model.Attention.QKNorm || a13b.Model.MoE.SharedExperts != 1 {
		t.Errorf("hunyuan_v1_moe without use_qk_norm, use_mixed_mlp_moe: qk_norm %v, shared experts %d; want both",
			a13b.Model.Attention.QKNorm, a13b.Model.MoE.SharedExperts)
	}
}

// TestHunyuanFeaturesColumn: the features table's Hugging Face column honours q/k norms
// after rotary positions and cross-layer K/V sharing in the models the HunYuan classes
// hold, as the export does.
func TestHunyuanFeaturesColumn(t *testing.T) {
	for _, name := range []string{"tiny_hunyuan_a13b", "tiny_hunyuan_large"} {
		m := hunyuanModel(t, name)
		for _, g := range features.Check(m, features.HF, features.Layout{}) {
			t.Errorf("%s: the table says %s: %s", name, g.Feature.Key, g.Verdict.Reason)
		}
		if l, gaps := layoutFor(m); l == LayoutMoec {
			t.Errorf("%s: exported in moec's layout: %v", name, gaps)
		}
	}
}
