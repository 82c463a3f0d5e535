package hf

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// TestDeepSeekMoEComputesAsDeepSeek: tiny DeepSeek-MoE models' logits from moec's runtime
// equal those of an independent torch forward written from deepseek-ai's
// modeling_deepseek.py (testdata/deepseek_moe_forward.py) on the same weights, exported as
// DeepseekForCausalLM's checkpoint: a dense first layer, shared experts fused into one MLP,
// norm_topk_prob both ways, moe_layer_freq, attention biases and GQA, and no shared experts
// (n_shared_experts: null). The same script
// rotating adjacent pairs (DeepSeek-V2/V3's convention) must disagree beyond the check's
// tolerance: the check tells the rope conventions apart.
func TestDeepSeekMoEComputesAsDeepSeek(t *testing.T) {
	py := torchPython(t)
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	text := make([]string, len(ids))
	for i, id := range ids {
		text[i] = fmt.Sprint(id)
	}
	for _, name := range []string{"tiny_deepseek_moe", "tiny_deepseek_moe_norm", "tiny_deepseek_moe_unshared"} {
		t.Run(name, func(t *testing.T) {
			m := deepseekModel(t, name)
			dir, _ := saveCheckpoint(t, m)
			out := filepath.Join(t.TempDir(), "export")
			man, err := Export(dir, out)
			if err != nil {
				t.Fatal(err)
			}
			if man.Layout != LayoutDeepSeekMoE || man.Class != "DeepseekForCausalLM" {
				t.Fatalf("exported as %s %s (%v), want DeepseekForCausalLM", man.Layout, man.Class, man.Unsupported)
			}
			want, err := tinyNet(t, m).Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if name != "tiny_deepseek_moe" {
				compareLogits(t, py, "deepseek_moe_forward.py", out, strings.Join(text, ","), want)
				return
			}
			// One torch run gives both conventions' logits (each start costs a second).
			b, err := exec.Command(py, filepath.Join("testdata", "deepseek_moe_forward.py"), out, strings.Join(text, ","), "both").Output()
			if err != nil {
				t.Fatalf("deepseek_moe_forward.py: %v", err)
			}
			var both [][]float64
			if err := json.Unmarshal(b, &both); err != nil || len(both) != 2 || len(both[0]) != len(want) || len(both[1]) != len(want) {
				t.Fatalf("deepseek_moe_forward.py both: %v, want two lists of %d logits", err, len(want))
			}
			if worst, scale := logitsGap(both[0], want); worst > 1e-5*scale { // compareLogits' tolerance
				t.Errorf("deepseek_moe_forward.py: logits differ: worst %.3g at scale %.3g", worst, scale)
			} else {
				t.Logf("deepseek_moe_forward.py: %d logits agree within %.2g of %.2g", len(want), worst, scale)
			}
			if worst, scale := logitsGap(both[1], want); worst <= 1e-5*scale {
				t.Errorf("adjacent-pair rope agrees with moec within %.3g of %.3g: the check cannot tell the conventions apart", worst, scale)
			} else {
				t.Logf("adjacent-pair rope: worst %.3g at scale %.3g, as it must not agree", worst, scale)
			}
		})
	}
}

// TestDeepSeekMoEExportLayout holds the export to DeepSeek-MoE's checkpoint names and
// config: the dense layers' MLP, the router and experts under mlp., the shared experts as
// one MLP of n_shared_experts · moe_intermediate_size, q_proj's rows unpermuted (rotate
// half), and a config.json that names the remote code and DeepSeek's layer rule.
func TestDeepSeekMoEExportLayout(t *testing.T) {
	m := deepseekModel(t, "tiny_deepseek_moe_norm")
	dir, orig := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := safetensors.ReadFile(filepath.Join(out, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int{}
	for _, tn := range wf.Tensors {
		shapes[tn.Name] = tn.Shape
		if strings.Contains(tn.Name, "block_sparse_moe") {
			t.Errorf("moec's name %s in a DeepSeek-MoE export", tn.Name)
		}
	}
	for name, shape := range map[string][]int{
		"model.layers.0.mlp.gate_proj.weight":                {40, 32}, // dense
		"model.layers.1.mlp.down_proj.weight":                {32, 40}, // dense: 1 % moe_layer_freq ≠ 0
		"model.layers.2.mlp.gate.weight":                     {4, 32},
		"model.layers.2.mlp.experts.3.up_proj.weight":        {8, 32},
		"model.layers.4.mlp.shared_experts.gate_proj.weight": {8, 32},
		"model.layers.4.mlp.shared_experts.down_proj.weight": {32, 8},
		"model.layers.4.self_attn.k_proj.bias":               {16},
		"model.layers.4.self_attn.o_proj.bias":               {32},
	} {
		if !slices.Equal(shapes[name], shape) {
			t.Errorf("%s: shape %v, want %v", name, shapes[name], shape)
		}
	}
	for _, o := range orig {
		if o.Name == "model.layers.3.self_attn.q_proj.weight" {
			q, _ := wf.Get(o.Name)
			if !bitsEqual(q.Data, o.Data) {
				t.Error("q_proj's rows were permuted: DeepSeek-MoE rotates halves, as moec does")
			}
		}
	}
	if notes := strings.Join(man.Notes, "; "); !strings.Contains(notes, "trust_remote_code") {
		t.Errorf("the notes do not say how the remote code is loaded: %s", notes)
	}
	cfg, err := os.ReadFile(filepath.Join(out, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"model_type": "deepseek"`, `"modeling_deepseek.DeepseekForCausalLM"`, `"first_k_dense_replace": 1`,
		`"moe_layer_freq": 2`, `"n_shared_experts": 1`, `"norm_topk_prob": true`, `"attention_bias": true`, `"type": "linear"`, `"seq_aux": false`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("%s lacks %s:\n%s", ConfigFile, want, cfg)
		}
	}
	if strings.Contains(string(cfg), `"head_dim"`) {
		t.Errorf("%s writes head_dim, which DeepseekConfig does not have", ConfigFile)
	}
}

// TestDeepSeekMoEWithoutSharedExperts: a deepseek config whose n_shared_experts is null
// (DeepseekMoE then builds no shared_experts) imports, converts and goes out again as
// DeepseekForCausalLM with n_shared_experts null, not in moec's own layout; a
// Mixtral-shaped model still goes out as Mixtral.
func TestDeepSeekMoEWithoutSharedExperts(t *testing.T) {
	res, err := ImportConfig(editedConfig(t, "deepseek-moe-16b.json", map[string]any{"n_shared_experts": nil}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model.MoE.SharedExperts != 0 {
		t.Fatalf("n_shared_experts null: %d shared experts", res.Model.MoE.SharedExperts)
	}
	if l, gaps := layoutFor(res.Model); l != LayoutDeepSeekMoE {
		t.Errorf("16B without shared experts goes out as %s (%v), want DeepseekForCausalLM", l, gaps)
	}
	m := deepseekModel(t, "tiny_deepseek_moe_unshared")
	dir, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutDeepSeekMoE {
		t.Fatalf("exported as %s (%v), want DeepseekForCausalLM", man.Layout, man.Unsupported)
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(out, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if v, ok := cfg["n_shared_experts"]; !ok || v != nil {
		t.Errorf("n_shared_experts = %v (present %v), want null", v, ok)
	}
	back, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "back"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Model.MoE.SharedExperts != 0 || back.Class != "DeepseekForCausalLM" {
		t.Errorf("imported back as %s with %d shared experts", back.Class, back.Model.MoE.SharedExperts)
	}
	mixtral := deepseekModel(t, "tiny_deepseek_moe_unshared")
	mixtral.MoE.FirstDense, mixtral.MoE.Normalize = 0, true
	if l, gaps := layoutFor(mixtral); l != LayoutMixtral {
		t.Errorf("a Mixtral-shaped model goes out as %s (%v)", l, gaps)
	}
}

// TestDeepSeekSeqAuxDefault: DeepSeek's configs take a missing seq_aux as true (a balance
// loss per sequence); moec's is per batch, and the import says so whether seq_aux is true
// or absent, and says nothing when it is false or there is no balance loss. The export
// writes seq_aux false, what moec computed.
func TestDeepSeekSeqAuxDefault(t *testing.T) {
	for _, file := range []string{"deepseek-moe-16b.json", "deepseek-v2-lite.json", "deepseek-v3.json"} {
		for _, tc := range []struct {
			edits map[string]any
			note  bool
		}{
			{map[string]any{"seq_aux": nil}, true},
			{map[string]any{"seq_aux": true}, true},
			{map[string]any{"seq_aux": false}, false},
			{map[string]any{"seq_aux": nil, "aux_loss_alpha": 0.0}, false},
		} {
			res, err := ImportConfig(editedConfig(t, file, tc.edits), Options{})
			if err != nil {
				t.Fatalf("%s %v: %v", file, tc.edits, err)
			}
			noted := strings.Contains(strings.Join(res.Notes, "; "), "balance loss per sequence")
			if noted != tc.note {
				t.Errorf("%s %v: noted %v, want %v (notes %q)", file, tc.edits, noted, tc.note, res.Notes)
			}
			if got := res.Model.MoE.BalanceLoss; tc.edits["aux_loss_alpha"] == nil && got != 0.001 {
				t.Errorf("%s %v: balance_loss %v, want aux_loss_alpha's 0.001", file, tc.edits, got)
			}
		}
	}
	for _, name := range []string{"tiny_deepseek_moe", "tiny_deepseek_v2", "tiny_deepseek_v3"} {
		dir, _ := saveCheckpoint(t, deepseekModel(t, name))
		out := filepath.Join(t.TempDir(), "export")
		if _, err := Export(dir, out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		if v, ok := cfg["seq_aux"]; !ok || v != false {
			t.Errorf("%s: exported seq_aux = %v (present %v), want false", name, v, ok)
		}
	}
}

// TestDeepSeekMoEConfigRules reads deepseek configs as modeling_deepseek.py computes them:
// MoEGate keeps a top-1 expert's probability whatever norm_topk_prob says, and what the
// remote code does not compute (sigmoid scores, group-limited or biased choice, a routed
// scale, yarn) is refused.
func TestDeepSeekMoEConfigRules(t *testing.T) {
	file := "deepseek-moe-16b.json"
	res, err := ImportConfig(readConfig(t, file), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Class != "DeepseekForCausalLM" || res.Model.MoE.FirstDense != 1 || res.Model.MoE.SharedExperts != 2 || res.Model.MoE.Normalize {
		t.Errorf("16B: class %s, first_dense %d, shared %d, normalize %v", res.Class, res.Model.MoE.FirstDense, res.Model.MoE.SharedExperts, res.Model.MoE.Normalize)
	}
	if l, gaps := layoutFor(res.Model); l != LayoutDeepSeekMoE {
		t.Errorf("16B goes out as %s (%v), want DeepseekForCausalLM", l, gaps)
	}
	for _, tc := range []struct {
		edits     map[string]any
		normalize bool
	}{
		{map[string]any{"norm_topk_prob": true}, true},
		{map[string]any{"norm_topk_prob": true, "num_experts_per_tok": 1}, false},
	} {
		res, err := ImportConfig(editedConfig(t, file, tc.edits), Options{})
		if err != nil {
			t.Fatalf("%v: %v", tc.edits, err)
		}
		if res.Model.MoE.Normalize != tc.normalize {
			t.Errorf("%v: normalize = %v, want %v", tc.edits, res.Model.MoE.Normalize, tc.normalize)
		}
	}
	for field, edits := range map[string]map[string]any{
		"scoring_func":          {"scoring_func": "sigmoid"},
		"topk_method":           {"topk_method": "group_limited_greedy", "n_group": 8, "topk_group": 3},
		"routed_scaling_factor": {"routed_scaling_factor": 2.5},
		"rope_scaling":          {"rope_scaling": map[string]any{"type": "yarn", "factor": 4.0}},
		"head_dim":              {"head_dim": 64},
	} {
		_, err := ImportConfig(editedConfig(t, file, edits), Options{})
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%v: err = %v, want a refusal naming %s", edits, err, field)
		}
	}
}

// TestDeepSeekMoELayoutChoice: a model one feature away from DeepseekForCausalLM goes out
// in moec's layout with the feature named.
func TestDeepSeekMoELayoutChoice(t *testing.T) {
	for _, tc := range []struct {
		change func(m *program.Model)
		named  string
	}{
		{func(m *program.Model) { m.MoE.TopK, m.MoE.Normalize = 1, true }, "a top-1 expert weighed by its probability"},
		{func(m *program.Model) { m.MoE.SharedHidden = 24 }, "shared experts as wide as the routed ones"},
		{func(m *program.Model) { m.MoE.Score = program.Sigmoid }, "softmax scores"},
		{func(m *program.Model) { m.MoE.Layers = []int{1} }, "MoE layers DeepSeek's rule names"},
		{func(m *program.Model) { m.Attention.HeadDim = 16 }, "head_dim = d_model / heads"},
	} {
		m := deepseekModel(t, "tiny_deepseek_moe")
		tc.change(m)
		got, gaps := layoutFor(m)
		if got != LayoutMoec || !strings.Contains(strings.Join(gaps, "; "), tc.named) {
			t.Errorf("layout %s (%v), want moec's naming %q", got, gaps, tc.named)
		}
	}
	// MoE in layers 2 and 4 of 5 is DeepSeek's first_k_dense_replace 2 or 1 with
	// moe_layer_freq 2, however moec's source spells it.
	m := deepseekModel(t, "tiny_deepseek_moe_norm")
	m.MoE.FirstDense, m.MoE.Every, m.MoE.Layers = 0, 0, []int{2, 4}
	if first, freq, ok := deepseekMoELayers(m); !ok || freq != 2 || first < 1 || first > 2 {
		t.Errorf("layers [2, 4]: first_k_dense_replace %d, moe_layer_freq %d, %v", first, freq, ok)
	}
}

// logitsGap returns the largest difference between a reference's logits and moec's, and
// the reference's largest magnitude.
func logitsGap(got []float64, want []float32) (worst, scale float64) {
	for i := range got {
		scale = math.Max(scale, math.Abs(got[i]))
		worst = math.Max(worst, math.Abs(got[i]-float64(want[i])))
	}
	return worst, scale
}
