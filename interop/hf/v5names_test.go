package hf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/parse"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// TestImportTransformers5Names: the configs transformers 5's save_pretrained writes import
// as the published ones do. Its Qwen3MoeConfig writes num_local_experts for num_experts
// (and DeepseekV3Config num_mtp_layers for num_nextn_predict_layers), its Qwen2MoeConfig
// qkv_bias, its DeepseekV2Config mlp_bias, and its DeepseekV3Config neither scoring_func nor
// topk_method, because DeepseekV3ForCausalLM always routes on sigmoid scores with the
// selection bias.
func TestImportTransformers5Names(t *testing.T) {
	imp := func(file string, edits map[string]any) (*Result, error) {
		t.Helper()
		return ImportConfig(editedConfig(t, file, edits), Options{})
	}
	published, err := imp("qwen3-30b-a3b.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := imp("qwen3-30b-a3b.json", map[string]any{"num_experts": nil, "num_local_experts": 128})
	if err != nil {
		t.Fatalf("num_local_experts: %v", err)
	}
	if renamed.Model.MoE.Experts != 128 || renamed.Counts.TotalAll != published.Counts.TotalAll {
		t.Errorf("num_local_experts: %d experts, %d parameters; published %d", renamed.Model.MoE.Experts, renamed.Counts.TotalAll, published.Counts.TotalAll)
	}
	if _, err := imp("qwen3-30b-a3b.json", map[string]any{"num_local_experts": 64}); err == nil || !strings.Contains(err.Error(), "num_local_experts") {
		t.Errorf("num_experts 128 beside num_local_experts 64: err = %v", err)
	}
	if _, err := imp("qwen3-30b-a3b.json", map[string]any{"num_local_experts": 128}); err != nil {
		t.Errorf("both names, one value: %v", err)
	}

	for _, tc := range []struct {
		bias any
		want bool
	}{{nil, true}, {true, true}, {false, false}} {
		res, err := imp("qwen1.5-moe-a2.7b.json", map[string]any{"qkv_bias": tc.bias})
		if err != nil {
			t.Fatalf("qkv_bias %v: %v", tc.bias, err)
		}
		if res.Model.Attention.BiasQKV != tc.want {
			t.Errorf("qkv_bias %v: Q/K/V biases %v", tc.bias, res.Model.Attention.BiasQKV)
		}
	}

	v3, err := imp("deepseek-v3.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	v5, err := imp("deepseek-v3.json", map[string]any{"scoring_func": nil, "topk_method": nil,
		"num_nextn_predict_layers": nil, "num_mtp_layers": 1, "n_routed_experts": nil, "num_local_experts": 256})
	if err != nil {
		t.Fatalf("DeepseekV3Config as transformers 5 writes it: %v", err)
	}
	h1, _ := checkpoint.ConfigHash(v3.Model)
	if h2, _ := checkpoint.ConfigHash(v5.Model); h1 != h2 || v5.Model.MoE.Score != program.Sigmoid || v5.Model.MoE.AuxFreeBias == 0 {
		t.Errorf("DeepseekV3Config as transformers 5 writes it is another model: score %s, aux_free_bias %v", v5.Model.MoE.Score, v5.Model.MoE.AuxFreeBias)
	}

	if _, err := imp("deepseek-v2-lite.json", map[string]any{"mlp_bias": false}); err != nil {
		t.Errorf("mlp_bias false: %v", err)
	}
	if _, err := imp("deepseek-v2-lite.json", map[string]any{"mlp_bias": true}); err == nil || !strings.Contains(err.Error(), "mlp_bias") {
		t.Errorf("mlp_bias true: err = %v", err)
	}
}

// TestExportQwenDenseLayers: a Qwen MoE model whose first layer is dense goes out as
// Qwen2MoeForCausalLM with mlp_only_layers naming it (as Qwen2MoeConfig(mlp_only_layers=[0])
// saves), and comes back bit for bit; Mixtral, whose layers are all sparse, cannot hold it.
func TestExportQwenDenseLayers(t *testing.T) {
	const src = `
model tiny_qwen2_moe_dense_first {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; rope_base = 1e6
  attention { heads = 4; kv_heads = 2; qkv_bias = true }
  ffn { hidden = 40; activation = swiglu }
  moe { experts = 4; top_k = 2; expert_hidden = 16; shared_experts = 1; shared_hidden = 24; shared_gate = true; first_dense = 1; normalize = false; capacity_factor = dropless }
}
model tiny_mixtral_dense_first {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16
  attention { heads = 4; kv_heads = 2 }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2; first_dense = 1; capacity_factor = dropless }
}
`
	f, ds := parse.File("dense.moe", []byte(src))
	prog, ds2 := check.Check(f)
	if ds = append(ds, ds2...); ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	// DeepSeek-MoE's class does (first_k_dense_replace 1, n_shared_experts null).
	if l, gaps := layoutFor(prog.Models["tiny_mixtral_dense_first"]); l != LayoutDeepSeekMoE {
		t.Errorf("a Mixtral with a dense first layer: layout %s, %v; want DeepseekForCausalLM", l, gaps)
	}
	mixtral := prog.Models["tiny_mixtral_dense_first"]
	mixtral.Attention.Window = 8 // Mixtral's alone: now no class holds it
	if l, gaps := layoutFor(mixtral); l != LayoutMoec || !strings.Contains(strings.Join(gaps, " "), "MoE in every layer") {
		t.Errorf("a windowed Mixtral with a dense first layer: layout %s, %v", l, gaps)
	}
	m := prog.Models["tiny_qwen2_moe_dense_first"]
	ckpt, orig := saveCheckpoint(t, m)
	dir := filepath.Join(t.TempDir(), "hf")
	man, err := Export(ckpt, dir)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutQwen2MoE {
		t.Fatalf("layout %s (%v), want qwen2_moe", man.Layout, man.Unsupported)
	}
	var cfg struct {
		Step  int   `json:"decoder_sparse_step"`
		Dense []int `json:"mlp_only_layers"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, ConfigFile)); err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("reading the exported config: %v", err)
	}
	if cfg.Step != 1 || !slices.Equal(cfg.Dense, []int{0}) {
		t.Errorf("decoder_sparse_step %d, mlp_only_layers %v; want 1, [0]", cfg.Step, cfg.Dense)
	}
	imp, err := ImportCheckpoint(dir, filepath.Join(t.TempDir(), "imported"), Options{Name: m.Name})
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Model) != len(orig) {
		t.Fatalf("%d tensors back, %d out", len(back.Model), len(orig))
	}
	byName := map[string][]float32{}
	for _, o := range orig {
		byName[o.Name] = o.Data
	}
	for _, tn := range back.Model {
		if !bitsEqual(tn.Data, byName[tn.Name]) {
			t.Errorf("tensor %s did not come back bit-exact", tn.Name)
		}
	}
}
