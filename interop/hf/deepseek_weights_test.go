package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// exportDeepSeek exports the tiny DeepSeek model name and returns the export folder, its
// weights and the checkpoint's tensors by moec name.
func exportDeepSeek(t *testing.T, name string) (string, *safetensors.File, map[string]safetensors.Tensor) {
	t.Helper()
	m := deepseekModel(t, name)
	dir, orig := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutDeepSeek || man.Class != "DeepseekV3ForCausalLM" {
		t.Fatalf("exported as %s %s (%v), want DeepseekV3ForCausalLM", man.Layout, man.Class, man.Unsupported)
	}
	wf, err := safetensors.ReadFile(filepath.Join(out, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]safetensors.Tensor{}
	for _, o := range orig {
		byName[o.Name] = o
	}
	return out, wf, byName
}

// rows returns rows [lo, hi) of a matrix of cols columns.
func rows(data []float32, cols, lo, hi int) []float32 { return data[lo*cols : hi*cols] }

// TestDeepSeekExportLayout holds the export to DeepSeek's checkpoint names and conventions,
// written from modeling_deepseek_v3.py: the router and routed experts under mlp., the
// shared experts as one MLP whose gate/up rows and down columns are moec's experts' in
// order, and the rope rows of q_b_proj (q_proj) and kv_a_proj_with_mqa in interleaved pairs
// (rope_interleave = true).
func TestDeepSeekExportLayout(t *testing.T) {
	for _, name := range []string{"tiny_deepseek_v3", "tiny_deepseek_v2_lite"} {
		t.Run(name, func(t *testing.T) {
			m := deepseekModel(t, name)
			out, wf, orig := exportDeepSeek(t, name)
			for _, tn := range wf.Tensors {
				if strings.Contains(tn.Name, "block_sparse_moe") || strings.Contains(tn.Name, ".w1.") {
					t.Errorf("moec's name %s in a DeepSeek export", tn.Name)
				}
			}
			get := func(n string) safetensors.Tensor {
				t.Helper()
				tn, ok := wf.Get(n)
				if !ok {
					t.Fatalf("the export lacks %s", n)
				}
				return tn
			}
			l := m.MoE.FirstDense // the first MoE layer
			p := fmt.Sprintf("model.layers.%d.", l)
			mp := p + "block_sparse_moe."
			if !bitsEqual(get(p+"mlp.gate.e_score_correction_bias").Data, orig[mp+"gate.e_score_correction_bias"].Data) ||
				!bitsEqual(get(p+"mlp.experts.1.up_proj.weight").Data, orig[mp+"experts.1.w3.weight"].Data) {
				t.Error("router bias or expert renamed wrongly")
			}
			get("model.layers.0.mlp.gate_proj.weight") // the dense layer
			n, I, D := m.MoE.SharedExperts, int(m.MoE.ExpertHidden), int(m.DModel)
			gate, down := get(p+"mlp.shared_experts.gate_proj.weight"), get(p+"mlp.shared_experts.down_proj.weight")
			if !slices.Equal(gate.Shape, []int{n * I, D}) || !slices.Equal(down.Shape, []int{D, n * I}) {
				t.Fatalf("shared experts' shapes %v and %v, want one MLP of width %d", gate.Shape, down.Shape, n*I)
			}
			for s := 0; s < n; s++ {
				w1, w2 := orig[mp+"shared_experts."+fmt.Sprint(s)+".w1.weight"], orig[mp+"shared_experts."+fmt.Sprint(s)+".w2.weight"]
				if !bitsEqual(rows(gate.Data, D, s*I, (s+1)*I), w1.Data) {
					t.Errorf("shared expert %d's gate rows are not moec's w1", s)
				}
				for d := 0; d < D; d++ {
					if !bitsEqual(down.Data[d*n*I+s*I:d*n*I+(s+1)*I], w2.Data[d*I:(d+1)*I]) {
						t.Fatalf("shared expert %d's down columns are not moec's w2", s)
					}
				}
			}
			a := m.Attention
			nope, rope, H, r := int(a.QKNopeHeadDim), int(a.QKRopeHeadDim), a.Heads, int(a.KVLoraRank)
			q := "self_attn.q_proj.weight"
			if a.QLoraRank > 0 {
				q = "self_attn.q_b_proj.weight"
			}
			checkPairs := func(tensor string, block, first, blocks int) {
				t.Helper()
				got, want := get(p+tensor), orig[p+tensor]
				cols := got.Shape[1]
				for b := 0; b < blocks; b++ {
					base := b*block + first
					for j := 0; j < rope/2; j++ {
						if !bitsEqual(rows(got.Data, cols, base+2*j, base+2*j+1), rows(want.Data, cols, base+j, base+j+1)) ||
							!bitsEqual(rows(got.Data, cols, base+2*j+1, base+2*j+2), rows(want.Data, cols, base+rope/2+j, base+rope/2+j+1)) {
							t.Fatalf("%s: rope pair %d of block %d is not moec's features %d and %d", tensor, j, b, j, j+rope/2)
						}
					}
					if !bitsEqual(rows(got.Data, cols, b*block, base), rows(want.Data, cols, b*block, base)) {
						t.Fatalf("%s: the rows before the rope features moved", tensor)
					}
				}
			}
			checkPairs(q, nope+rope, nope, H)
			checkPairs("self_attn.kv_a_proj_with_mqa.weight", r+rope, r, 1)
			var cfg map[string]any
			b, _ := os.ReadFile(filepath.Join(out, ConfigFile))
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["model_type"] != "deepseek_v3" || cfg["rope_interleave"] != true || cfg["n_shared_experts"] != float64(n) || cfg["topk_method"] != "noaux_tc" {
				t.Errorf("config.json: model_type %v, rope_interleave %v, n_shared_experts %v, topk_method %v", cfg["model_type"], cfg["rope_interleave"], cfg["n_shared_experts"], cfg["topk_method"])
			}
		})
	}
}

// TestDeepSeekImportRotateHalf imports a DeepSeek folder whose config says rope_interleave =
// false (transformers then rotates halves, as moec does): its rope rows are taken as they are.
func TestDeepSeekImportRotateHalf(t *testing.T) {
	out, wf, orig := exportDeepSeek(t, "tiny_deepseek_v3")
	dir := t.TempDir()
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(out, ConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["rope_interleave"] = false
	cb, _ := json.Marshal(cfg)
	ts := slices.Clone(wf.Tensors)
	for i, tn := range ts {
		if deepseekRopeRows.MatchString(tn.Name) {
			ts[i].Data = orig[tn.Name].Data // moec's rotate-half rows
		}
	}
	wb, err := safetensors.Encode(ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), cb, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, WeightsFile), wb, 0o644); err != nil {
		t.Fatal(err)
	}
	imp, err := ImportCheckpoint(dir, filepath.Join(t.TempDir(), "imported"), Options{Name: "tiny_deepseek_v3"})
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range back.Model {
		if !bitsEqual(tn.Data, orig[tn.Name].Data) {
			t.Errorf("tensor %s did not come back bit-exact", tn.Name)
		}
	}
}

// TestDeepSeekImportRefusesMTP: a checkpoint with multi-token prediction layers is refused
// with the reason, not with a missing-tensor error.
func TestDeepSeekImportRefusesMTP(t *testing.T) {
	out, _, _ := exportDeepSeek(t, "tiny_deepseek_v3")
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(out, ConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["num_nextn_predict_layers"] = 1
	cb, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(out, ConfigFile), cb, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "imported"), Options{Name: "mtp"})
	if err == nil || diag.CodeOf(err) != diag.CodeWeightsMismatch || !strings.Contains(err.Error(), "multi-token prediction module (num_nextn_predict_layers = 1: model.layers.3") {
		t.Fatalf("got %v, want the multi-token prediction refusal", err)
	}
}

// TestDeepSeekV2Import imports a DeepSeek-V2 folder (model_type deepseek_v2: a softmax
// router without e_score_correction_bias, rope rows always in adjacent pairs, no
// rope_interleave key) built by hand from a moec checkpoint: every tensor comes back
// bit-exact and the model is the original one.
func TestDeepSeekV2Import(t *testing.T) {
	m := deepseekModel(t, "tiny_deepseek_v2")
	ckpt, orig := saveCheckpoint(t, m)
	dir := filepath.Join(t.TempDir(), "hf")
	man, err := Export(ckpt, dir)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutDeepSeek || man.Class != "DeepseekV2ForCausalLM" {
		t.Fatalf("a softmax-routed latent-attention model exported as %s %s (%v); DeepseekV2ForCausalLM routes so", man.Layout, man.Class, man.Unsupported)
	}
	var cfg map[string]any
	if b, err := os.ReadFile(filepath.Join(dir, ConfigFile)); err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("reading the exported config: %v", err)
	}
	if cfg["model_type"] != "deepseek_v2" || cfg["topk_method"] != "greedy" || cfg["rope_interleave"] != nil || cfg["scoring_func"] != nil {
		t.Errorf("exported config: model_type %v, topk_method %v, rope_interleave %v, scoring_func %v", cfg["model_type"], cfg["topk_method"], cfg["rope_interleave"], cfg["scoring_func"])
	}
	imp, err := ImportCheckpoint(dir, filepath.Join(t.TempDir(), "imported"), Options{Name: m.Name})
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := checkpoint.ConfigHash(m)
	if h2, _ := checkpoint.ConfigHash(imp.Model); h1 != h2 {
		a, _ := json.Marshal(m)
		b, _ := json.Marshal(imp.Model)
		t.Errorf("the imported model differs:\n%s\n%s", a, b)
	}
	back, err := checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Model) != len(orig) {
		t.Fatalf("%d tensors back, %d out", len(back.Model), len(orig))
	}
	byName := map[string]safetensors.Tensor{}
	for _, o := range orig {
		byName[o.Name] = o
	}
	for _, tn := range back.Model {
		if o, ok := byName[tn.Name]; !ok || !slices.Equal(o.Shape, tn.Shape) || !bitsEqual(tn.Data, o.Data) {
			t.Errorf("tensor %s did not come back bit-exact", tn.Name)
		}
	}
}

// TestDeepSeekQKHeadDim: transformers 5 writes the derived qk_head_dim into a saved
// DeepseekV3Config; the right one imports, another is refused by name.
func TestDeepSeekQKHeadDim(t *testing.T) {
	if _, err := ImportConfig(editedConfig(t, "deepseek-v3.json", map[string]any{"qk_head_dim": 192}), Options{}); err != nil {
		t.Errorf("qk_head_dim 192 (128 + 64): %v", err)
	}
	if _, err := ImportConfig(editedConfig(t, "deepseek-v3.json", map[string]any{"qk_head_dim": 128}), Options{}); err == nil || !strings.Contains(err.Error(), "qk_head_dim") {
		t.Errorf("qk_head_dim 128: %v, want a refusal naming it", err)
	}
}
