package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// Tiny models of each layout; the runtime can build all of them.
const tinyModels = `
model tiny_mixtral {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-5; rope_base = 1e6
  attention { heads = 4; kv_heads = 2 }
  ffn { hidden = 48; activation = swiglu }
  moe { experts = 4; top_k = 2; capacity_factor = dropless; balance_loss = 0.02 }
}
model tiny_llama {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; tie_embeddings = true
  attention { heads = 4; kv_heads = 1 }
  ffn { hidden = 64; activation = swiglu }
}
model tiny_qwen3_moe {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16
  attention { heads = 4; kv_heads = 2; head_dim = 16; qk_norm = true }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 6; top_k = 2; expert_hidden = 24; every = 2; normalize = false; capacity_factor = dropless }
}
model tiny_gated {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16
  attention { heads = 4; kv_heads = 2; qk_norm = full }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 2; expert_hidden = 24; shared_experts = 1; shared_hidden = 40; shared_gate = true; capacity_factor = dropless }
}
model tiny_olmoe {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm_eps = 1e-5
  attention { heads = 4; kv_heads = 2; qk_norm = full }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 6; top_k = 3; normalize = false; capacity_factor = dropless; balance_loss = 0.01; z_loss = 0.001 }
}
model tiny_olmoe_clip {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm_eps = 1e-5
  attention { heads = 4; kv_heads = 2; qk_norm = full; clip_qkv = 0.4 }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 6; top_k = 3; normalize = false; capacity_factor = dropless; balance_loss = 0.01; z_loss = 0.001 }
}
model tiny_qwen2_moe {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16; rope_base = 1e6
  attention { heads = 4; kv_heads = 2; qkv_bias = true }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 6; top_k = 2; expert_hidden = 24; shared_experts = 1; shared_hidden = 40; shared_gate = true; every = 2; normalize = true; capacity_factor = dropless }
}
model tiny_llama_yarn {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; rope_scaling = yarn; rope_factor = 4
  attention { heads = 4; kv_heads = 2 }
  ffn { hidden = 64; activation = swiglu }
}
model tiny_llama_llama3 {
  vocab = 300; d_model = 32; layers = 2; seq_len = 64; rope_base = 1e6
  rope_scaling = llama3; rope_factor = 8; rope_original_seq_len = 4
  attention { heads = 4; kv_heads = 2 }
  ffn { hidden = 48; activation = swiglu }
}
model tiny_llama_linear {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; rope_scaling = linear; rope_factor = 2.5
  attention { heads = 4; kv_heads = 2; head_dim = 16 }
  ffn { hidden = 64; activation = swiglu }
}
model tiny_arctic {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-5
  attention { heads = 4; kv_heads = 2 }
  ffn { hidden = 32; activation = swiglu }
  moe { experts = 4; top_k = 2; expert_hidden = 24; parallel_dense = true; parallel_attention = true; capacity_factor = dropless }
}
model tiny_arctic_every2 {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16; norm_eps = 1e-5
  attention { heads = 4; kv_heads = 4 }
  ffn { hidden = 32; activation = swiglu }
  moe { experts = 4; top_k = 1; normalize = true; every = 2; parallel_dense = true; parallel_attention = true; capacity_factor = dropless }
}
model tiny_gpt_oss {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-5; rope_base = 150000
  attention { heads = 4; kv_heads = 2; head_dim = 8; qkv_bias = true; out_bias = true; window = 3; full_every = 2; sinks = true }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2; router_bias = true; expert_bias = true; swiglu_limit = 0.5; capacity_factor = dropless }
}
model tiny_gpt_oss_wide {
  vocab = 300; d_model = 64; layers = 2; seq_len = 16; norm_eps = 1e-5; rope_base = 150000
  attention { heads = 4; kv_heads = 2; head_dim = 16; qkv_bias = true; out_bias = true; window = 3; full_every = 2; sinks = true }
  ffn { hidden = 32; activation = swiglu }
  moe { experts = 3; top_k = 2; router_bias = true; expert_bias = true; swiglu_limit = 7; capacity_factor = dropless; balance_loss = 0.01 }
}
model tiny_llama4 {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16; norm_eps = 1e-5; rope_base = 500000
  attention { heads = 4; kv_heads = 2; head_dim = 8; nope_every = 2; chunk = 3; qk_l2_norm = true; nope_temperature = 0.5; nope_temperature_floor = 2 }
  ffn { hidden = 48; activation = swiglu }
  moe { experts = 4; top_k = 1; expert_hidden = 24; shared_experts = 1; score = sigmoid; normalize = false; gate_input = true; every = 2; capacity_factor = dropless }
}
model tiny_dbrx {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm = layernorm; norm_bias = false; rope_base = 500000
  attention { heads = 4; kv_heads = 2; clip_qkv = 0.1 }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2; capacity_factor = dropless; balance_loss = 0.05 }
}
model tiny_phimoe {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm = layernorm; head_bias = true
  rope_scaling = longrope; rope_original_seq_len = 16; rope_short_factor = [1, 1.5, 2, 3]; rope_long_factor = [2, 3, 4, 5]
  rope_attention_factor = 1.2
  attention { heads = 4; kv_heads = 2; qkv_bias = true; out_bias = true }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2; normalize = false; sparsemixer_eps = 0.1; capacity_factor = dropless; balance_loss = 0.001 }
}
model tiny_hunyuan {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16
  attention { heads = 4; talking_heads = true; share_weights = 0.5 }
  ffn { hidden = 64; activation = gelu }
  moe { experts = 4; top_k = 1; router = token_embedding }
}
`

func tinyModel(t *testing.T, name string) *program.Model {
	t.Helper()
	f, ds := parse.File("tiny.moe", []byte(tinyModels))
	prog, ds2 := check.Check(f)
	if ds = append(ds, ds2...); ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	return prog.Models[name]
}

// tinyNet builds m with seed 7 and gives every tensor the initialisation leaves constant
// (norm scales of ones, biases of zeros) seeded random values around the same level: a
// mapping that swapped two norms or two biases, or dropped one, must change the logits.
func tinyNet(t *testing.T, m *program.Model) *nn.Model {
	t.Helper()
	net, err := nn.New(m, 7)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range net.Params() {
		constant := true
		for _, v := range p.W {
			constant = constant && v == p.W[0]
		}
		if !constant {
			continue
		}
		rng := rand.New(rand.NewSource(int64(i)))
		for j := range p.W {
			p.W[j] += float32(0.2 * rng.NormFloat64())
		}
	}
	return net
}

// saveCheckpoint writes the runtime model tinyNet makes as a moec checkpoint and returns
// its directory and tensors.
func saveCheckpoint(t *testing.T, m *program.Model) (string, []safetensors.Tensor) {
	t.Helper()
	net := tinyNet(t, m)
	ts := train.ParamTensors(net.Params())
	hash, _ := checkpoint.ConfigHash(m)
	dir, err := checkpoint.Writer{}.Save(filepath.Join(t.TempDir(), "run", train.CheckpointsDir), &checkpoint.Checkpoint{
		Manifest: checkpoint.Manifest{Train: m.Name, Stage: "s", Step: 3, Final: true, Model: m, ConfigHash: hash, Seed: 7},
		Model:    ts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, ts
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestRoundTrip exports a checkpoint, imports the export, and exports that again: every
// tensor must come back bit for bit, and the second export must equal the first byte for
// byte. The imported checkpoint must load into the runtime.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		model  string
		layout Layout
	}{
		{"tiny_mixtral", LayoutMixtral},
		{"tiny_llama", LayoutLlama},
		{"tiny_qwen3_moe", LayoutQwen3MoE},
		{"tiny_olmoe", LayoutOlmoe},
		{"tiny_olmoe_clip", LayoutOlmoe},
		{"tiny_qwen2_moe", LayoutQwen2MoE},
		{"tiny_arctic", LayoutArctic},
		{"tiny_arctic_every2", LayoutArctic},
		{"tiny_llama4", LayoutLlama4},
		{"tiny_gpt_oss", LayoutGptOss},
		{"tiny_deepseek_v3", LayoutDeepSeek},          // q_lora_rank, groups, yarn
		{"tiny_deepseek_v2_lite", LayoutDeepSeek},     // full-rank q_proj, two shared experts
		{"tiny_deepseek_moe", LayoutDeepSeekMoE},      // Llama attention, a dense first layer, two shared experts
		{"tiny_deepseek_moe_norm", LayoutDeepSeekMoE}, // moe_layer_freq 2, attention biases, renormalised top-3
		{"tiny_hunyuan_a13b", LayoutHunyuanMoE},
		{"tiny_hunyuan_large", LayoutHunyuan}, // cross-layer attention, top-1 by probability
		{"tiny_dbrx", LayoutDbrx},             // fused Wqkv and experts, clip_qkv, LayerNorms without biases
		{"tiny_phimoe", LayoutPhimoe},         // sparsemixer, biased LayerNorms, attention and head, longrope
	} {
		t.Run(tc.model, func(t *testing.T) {
			var m *program.Model
			switch {
			case strings.HasPrefix(tc.model, "tiny_deepseek"):
				m = deepseekModel(t, tc.model)
			case strings.HasPrefix(tc.model, "tiny_hunyuan_"):
				m = hunyuanModel(t, tc.model)
			default:
				m = tinyModel(t, tc.model)
			}
			dir, orig := saveCheckpoint(t, m)
			out1 := filepath.Join(t.TempDir(), "hf1")
			man, err := Export(filepath.Dir(filepath.Dir(dir)), out1) // the run directory
			if err != nil {
				t.Fatal(err)
			}
			if man.Layout != tc.layout || len(man.Unsupported) != 0 {
				t.Fatalf("layout %s (unsupported %v), want %s", man.Layout, man.Unsupported, tc.layout)
			}
			if _, err := VerifyExport(out1); err != nil {
				t.Fatal(err)
			}
			// Each routed expert of each MoE layer went out as one set of its three
			// projections, and nothing else (a shared expert, a router) joined a set.
			sets := 0
			for i := 0; i < m.Layers && tc.layout != LayoutLlama4 && tc.layout != LayoutGptOss && tc.layout != LayoutDbrx; i++ { // they fuse a layer's experts
				if m.IsMoELayer(i) {
					sets += m.MoE.Experts
				}
			}
			if len(man.Experts) != sets {
				t.Errorf("%d expert sets in the manifest, the model has %d routed experts", len(man.Experts), sets)
			}
			for _, x := range man.Experts {
				if len(x.Tensors) != 3 {
					t.Errorf("layer %d expert %d carries %v", x.Layer, x.Expert, x.Tensors)
				}
			}
			imp, err := ImportCheckpoint(out1, filepath.Join(t.TempDir(), "imported"), Options{Name: tc.model})
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
			byName := map[string]safetensors.Tensor{}
			for _, tn := range back.Model {
				byName[tn.Name] = tn
			}
			for _, o := range orig {
				b, ok := byName[o.Name]
				if !ok || !slices.Equal(o.Shape, b.Shape) || !bitsEqual(o.Data, b.Data) {
					t.Fatalf("tensor %s did not come back bit-exact", o.Name)
				}
			}
			// The imported model is the original one: the same config, and the runtime loads it.
			h1, _ := checkpoint.ConfigHash(m)
			if h2, _ := checkpoint.ConfigHash(imp.Model); h1 != h2 {
				a, _ := json.Marshal(m)
				b, _ := json.Marshal(imp.Model)
				t.Errorf("the imported model differs from the exported one:\n%s\n%s", a, b)
			}
			if _, _, err := train.LoadNet(imp.Checkpoint, nil); err != nil {
				t.Fatalf("runtime cannot load the imported checkpoint: %v", err)
			}
			out2 := filepath.Join(t.TempDir(), "hf2")
			if _, err := Export(imp.Checkpoint, out2); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{WeightsFile, ConfigFile} {
				a, _ := os.ReadFile(filepath.Join(out1, f))
				b, _ := os.ReadFile(filepath.Join(out2, f))
				if !bytes.Equal(a, b) {
					t.Errorf("%s differs between the first and the second export", f)
				}
			}
		})
	}
}

// TestExportMoecLayout checks that a model with features transformers has no class for is
// exported in moec's layout, with the features named.
func TestExportMoecLayout(t *testing.T) {
	dir, orig := saveCheckpoint(t, tinyModel(t, "tiny_hunyuan"))
	out := filepath.Join(t.TempDir(), "x")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutMoec || man.Class != "" {
		t.Fatalf("layout %s class %q, want moec", man.Layout, man.Class)
	}
	all := strings.Join(man.Unsupported, "; ")
	for _, w := range []string{"talking heads", "attention-weight sharing", "token-embedding routing", "ffn activation gelu"} {
		if !strings.Contains(all, w) {
			t.Errorf("unsupported list lacks %q: %s", w, all)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ConfigFile)); err == nil {
		t.Errorf("a moec-layout export wrote %s, which transformers would misread", ConfigFile)
	}
	v, err := VerifyExport(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tensors) != len(orig) || len(v.Experts) != 2*4 {
		t.Errorf("%d tensors (want %d), %d expert sets (want 8)", len(v.Tensors), len(orig), len(v.Experts))
	}
}

// TestVerifyCatchesTampering checks that the manifest proof fails when an expert tensor is
// carried twice, is missing, or its data changed.
func TestVerifyCatchesTampering(t *testing.T) {
	dir, _ := saveCheckpoint(t, tinyModel(t, "tiny_mixtral"))
	out := filepath.Join(t.TempDir(), "x")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	manPath := filepath.Join(out, ExportManifestFile)
	good, _ := os.ReadFile(manPath)
	edit := func(f func(m *ExportManifest)) {
		var m ExportManifest
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		b, _ := json.Marshal(&m)
		os.WriteFile(manPath, b, 0o644)
	}
	for name, f := range map[string]func(m *ExportManifest){
		"expert twice":   func(m *ExportManifest) { m.Experts[1].Tensors = m.Experts[0].Tensors },
		"expert missing": func(m *ExportManifest) { m.Experts = m.Experts[1:] },
		"duplicate set":  func(m *ExportManifest) { m.Experts[1].Expert = m.Experts[0].Expert },
		"data changed":   func(m *ExportManifest) { m.Tensors[5].SHA256 = strings.Repeat("0", 64) },
		"tensor twice":   func(m *ExportManifest) { m.Tensors[2].From = m.Tensors[1].From },
	} {
		edit(f)
		if _, err := VerifyExport(out); err == nil || diag.CodeOf(err) != diag.CodeNotExportable {
			t.Errorf("%s: VerifyExport = %v, want an %s error", name, err, diag.CodeNotExportable)
		}
	}
	os.WriteFile(manPath, good, 0o644)
	if _, err := VerifyExport(out); err != nil {
		t.Fatalf("untampered export: %v", err)
	}
	if _, err := Export(dir, out); diag.CodeOf(err) != diag.CodeNotExportable {
		t.Errorf("export into a non-empty directory: %v", err)
	}
}

// TestImportCheckpointRefusesMismatch checks that weights that do not fit the config are
// refused with the tensor named.
func TestImportCheckpointRefusesMismatch(t *testing.T) {
	dir, _ := saveCheckpoint(t, tinyModel(t, "tiny_mixtral"))
	out := filepath.Join(t.TempDir(), "hf")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(out, ConfigFile)
	cfg, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, bytes.Replace(cfg, []byte(`"num_local_experts": 4`), []byte(`"num_local_experts": 5`), 1), 0o644)
	_, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "imp"), Options{})
	if diag.CodeOf(err) != diag.CodeWeightsMismatch || !strings.Contains(err.Error(), "gate.weight has shape [4 32], the model needs [5 32]") {
		t.Errorf("err = %v, want %s naming the router of the wrong shape", err, diag.CodeWeightsMismatch)
	}
}

// encodeBF16 writes tensors as a BF16 safetensors file (as Hugging Face releases are),
// truncating each value to its top 16 bits; it returns the values the file holds.
func encodeBF16(t *testing.T, ts []safetensors.Tensor) ([]byte, map[string][]float32) {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	held := map[string][]float32{}
	for _, tn := range ts {
		begin := len(data)
		vals := make([]float32, len(tn.Data))
		for i, v := range tn.Data {
			hi := math.Float32bits(v) >> 16
			data = append(data, byte(hi), byte(hi>>8))
			vals[i] = math.Float32frombits(hi << 16)
		}
		held[tn.Name] = vals
		header[tn.Name] = map[string]any{"dtype": "BF16", "shape": tn.Shape, "data_offsets": []int{begin, len(data)}}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 8, 8+len(hj)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	return append(append(out, hj...), data...), held
}

// TestImportShardedBF16 imports a folder whose weights are split over two files, one of
// them BF16: every value arrives exactly (BF16 widens to float32 without rounding).
func TestImportShardedBF16(t *testing.T) {
	dir, _ := saveCheckpoint(t, tinyModel(t, "tiny_mixtral"))
	out := filepath.Join(t.TempDir(), "hf")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(filepath.Join(out, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	half := len(f.Tensors) / 2
	first, held := encodeBF16(t, f.Tensors[:half])
	second, err := safetensors.Encode(f.Tensors[half:], nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, t2 := range f.Tensors[half:] {
		held[t2.Name] = t2.Data
	}
	os.Remove(filepath.Join(out, WeightsFile))
	os.WriteFile(filepath.Join(out, "model-00001-of-00002.safetensors"), first, 0o644)
	os.WriteFile(filepath.Join(out, "model-00002-of-00002.safetensors"), second, 0o644)
	imp, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "imp"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Model) != len(f.Tensors) {
		t.Fatalf("%d tensors imported, %d in the folder", len(back.Model), len(f.Tensors))
	}
	for _, tn := range back.Model {
		if !bitsEqual(tn.Data, held[tn.Name]) {
			t.Errorf("tensor %s differs from the folder's values", tn.Name)
		}
	}
}

// TestExportGatedAndFullNorm checks where OLMoE's whole-projection q/k norms and
// Qwen2-MoE's shared-expert gate go: each alone into its class, with the tensors at the
// class's names and shapes; both together, which no class holds, into moec's layout with
// what each class would need named and both fields kept in the written model config.
func TestExportGatedAndFullNorm(t *testing.T) {
	for _, tc := range []struct {
		model  string
		layout Layout
		shapes map[string][]int
	}{
		{"tiny_olmoe", LayoutOlmoe, map[string][]int{
			"model.layers.1.self_attn.q_norm.weight":        {32}, // heads·head_dim
			"model.layers.1.self_attn.k_norm.weight":        {16}, // kv_heads·head_dim
			"model.layers.1.mlp.gate.weight":                {6, 32},
			"model.layers.1.mlp.experts.5.down_proj.weight": {32, 24},
		}},
		{"tiny_qwen2_moe", LayoutQwen2MoE, map[string][]int{
			"model.layers.1.self_attn.q_proj.bias":              {32},
			"model.layers.1.self_attn.k_proj.bias":              {16},
			"model.layers.1.mlp.shared_expert.gate_proj.weight": {40, 32},
			"model.layers.1.mlp.shared_expert.down_proj.weight": {32, 40},
			"model.layers.1.mlp.shared_expert_gate.weight":      {1, 32},
			"model.layers.1.mlp.experts.5.up_proj.weight":       {24, 32},
			"model.layers.0.mlp.up_proj.weight":                 {64, 32}, // a dense layer
		}},
		{"tiny_gated", LayoutMoec, map[string][]int{
			"model.layers.1.self_attn.q_norm.weight":                    {32},
			"model.layers.1.self_attn.k_norm.weight":                    {16},
			"model.layers.1.block_sparse_moe.shared_expert_gate.weight": {1, 32},
		}},
	} {
		t.Run(tc.model, func(t *testing.T) {
			dir, orig := saveCheckpoint(t, tinyModel(t, tc.model))
			out := filepath.Join(t.TempDir(), "x")
			man, err := Export(dir, out)
			if err != nil {
				t.Fatal(err)
			}
			if man.Layout != tc.layout {
				t.Fatalf("layout %s (unsupported %v), want %s", man.Layout, man.Unsupported, tc.layout)
			}
			v, err := VerifyExport(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(v.Tensors) != len(orig) {
				t.Errorf("%d tensors exported, checkpoint has %d", len(v.Tensors), len(orig))
			}
			shapes := map[string][]int{}
			for _, e := range v.Tensors {
				shapes[e.Name] = e.Shape
			}
			for name, want := range tc.shapes {
				if !slices.Equal(shapes[name], want) {
					t.Errorf("%s: shape %v, want %v", name, shapes[name], want)
				}
			}
			if tc.layout != LayoutMoec {
				if len(man.Unsupported) != 0 {
					t.Errorf("unsupported %v", man.Unsupported)
				}
				return
			}
			all := strings.Join(man.Unsupported, "; ")
			for _, w := range []string{
				"OlmoeForCausalLM needs no shared expert",
				"Qwen2MoeForCausalLM needs no q/k norms, biases on Q, K and V only",
				"Qwen3MoeForCausalLM needs per-head q/k norms (qk_norm = true)",
			} {
				if !strings.Contains(all, w) {
					t.Errorf("unsupported list lacks %q: %s", w, all)
				}
			}
			b, err := os.ReadFile(filepath.Join(out, MoecConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			var m program.Model
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if !m.Attention.QKNorm || !m.Attention.QKNormFull || m.MoE == nil || !m.MoE.SharedGate {
				t.Errorf("%s lost qk_norm = full or shared_gate: attention %+v, moe %+v", MoecConfigFile, m.Attention, m.MoE)
			}
		})
	}
}

// TestLayoutChoice checks which class each published config's model is exported as (the
// class it came from), and that a model one feature away from OLMoE, Qwen2-MoE or Mixtral is not
// forced into that class but goes out in moec's layout with the feature named.
func TestLayoutChoice(t *testing.T) {
	for file, want := range map[string]Layout{
		"mixtral-8x7b.json":      LayoutMixtral,
		"qwen3-30b-a3b.json":     LayoutQwen3MoE,
		"llama-3-8b.json":        LayoutLlama,
		"olmoe-1b-7b.json":       LayoutOlmoe,
		"qwen1.5-moe-a2.7b.json": LayoutQwen2MoE,
	} {
		res, err := ImportConfig(readConfig(t, file), Options{})
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
		named  string // in the reasons when want is LayoutMoec
	}{
		{"tiny_olmoe", func(m *program.Model) { m.MoE.Normalize = true }, LayoutOlmoe, ""},
		{"tiny_olmoe", func(m *program.Model) { m.MoE.Every = 2 }, LayoutMoec, "OlmoeForCausalLM needs MoE in every layer"},
		{"tiny_olmoe", func(m *program.Model) { m.Attention.HeadDim = 16 }, LayoutMoec, "head_dim = d_model / heads"},
		{"tiny_olmoe", func(m *program.Model) { m.Attention.HeadDim = 0 }, LayoutOlmoe, ""}, // unset: d_model / heads
		{"tiny_olmoe", func(m *program.Model) { m.Attention.BiasQKV, m.Attention.BiasOut = true, true }, LayoutMoec, "OlmoeForCausalLM needs no attention bias"},
		{"tiny_qwen2_moe", func(m *program.Model) { m.MoE.Normalize = false }, LayoutQwen2MoE, ""},
		{"tiny_qwen2_moe", func(m *program.Model) { m.Attention.BiasOut = true }, LayoutMoec, "biases on Q, K and V only"},
		{"tiny_qwen2_moe", func(m *program.Model) { m.MoE.SharedGate = false }, LayoutMoec, "an ungated shared expert"},
		{"tiny_qwen2_moe", func(m *program.Model) { m.MoE.SharedExperts = 2 }, LayoutMoec, "2 shared experts"},
		{"tiny_qwen2_moe", func(m *program.Model) { m.Attention.BiasQKV = false }, LayoutMoec, "Qwen2MoeForCausalLM needs biases on Q, K and V only"},
		{"tiny_qwen3_moe", func(m *program.Model) { m.Attention.QKNormFull = true }, LayoutMoec, "Qwen3MoeForCausalLM needs per-head q/k norms"},
		// Without renormalisation and shared experts it is DeepSeek-MoE's greedy top-k
		// (n_shared_experts: null); a sliding window then leaves no class.
		{"tiny_mixtral", func(m *program.Model) { m.MoE.Normalize = false }, LayoutDeepSeekMoE, ""},
		{"tiny_mixtral", func(m *program.Model) { m.MoE.Normalize, m.Attention.Window = false, 8 }, LayoutMoec, "MixtralForCausalLM needs a renormalised top-k"},
		// share_weights unset in a Go-built model means no sharing, as everywhere else.
		{"tiny_mixtral", func(m *program.Model) { m.Attention.ShareWeights = 0 }, LayoutMixtral, ""},
		{"tiny_mixtral", func(m *program.Model) { m.Attention.ShareWeights = 0.5 }, LayoutMoec, "share_weights < 1"},
	} {
		m := tinyModel(t, tc.model)
		tc.change(m)
		got, gaps := layoutFor(m)
		if got != tc.want || (tc.named != "" && !strings.Contains(strings.Join(gaps, "; "), tc.named)) {
			t.Errorf("%s changed: layout %s (%v), want %s naming %q", tc.model, got, gaps, tc.want, tc.named)
		}
	}
}
