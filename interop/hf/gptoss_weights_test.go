package hf

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// gptOssFolder writes a Hugging Face gpt-oss folder holding the weights of the tiny_gpt_oss
// runtime model (tinyNet) in GptOssForCausalLM's names and fused layout, written here
// from modeling_gpt_oss.py apart from the importer: gate_up_proj [E, D, 2I] with gate and
// up alternating along its last dimension, down_proj [E, I, D]. With mxfp4 the experts'
// matrices are instead MXFP4 blocks and scales of seeded random bytes. It returns the
// folder and the original tensors by moec name.
func gptOssFolder(t *testing.T, m *program.Model, mxfp4 bool) (string, map[string][]float32, []safetensors.RawTensor) {
	t.Helper()
	orig := map[string][]float32{}
	for _, p := range tinyNet(t, m).Params() {
		orig[p.Name] = append([]float32(nil), p.W...)
	}
	d, _ := m.Dims()
	E, D, I := m.MoE.Experts, d.D, d.EHidden
	var raw []safetensors.RawTensor
	f32 := func(name string, shape []int, data []float32) {
		b := make([]byte, 4*len(data))
		for i, v := range data {
			bits := math.Float32bits(v)
			b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
		}
		raw = append(raw, safetensors.RawTensor{Name: name, DType: "F32", Shape: shape, Bytes: b})
	}
	rng := rand.New(rand.NewSource(9))
	u8 := func(name string, shape []int, lo, span int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(lo + rng.Intn(span))
		}
		raw = append(raw, safetensors.RawTensor{Name: name, DType: "U8", Shape: shape, Bytes: b})
	}
	for _, p := range tinyNet(t, m).Params() {
		if strings.Contains(p.Name, ".experts.") {
			continue
		}
		f32(strings.Replace(p.Name, "block_sparse_moe.gate.", "mlp.router.", 1), p.Shape, p.W)
	}
	for l := 0; l < m.Layers; l++ {
		ex := func(e int, part string) []float32 {
			return orig[fmt.Sprintf("model.layers.%d.block_sparse_moe.experts.%d.%s", l, e, part)]
		}
		p := fmt.Sprintf("model.layers.%d.mlp.experts.", l)
		gu, gub := make([]float32, E*D*2*I), make([]float32, E*2*I)
		down, db := make([]float32, E*I*D), make([]float32, E*D)
		for e := 0; e < E; e++ {
			for i := 0; i < I; i++ {
				for x := 0; x < D; x++ {
					gu[(e*D+x)*2*I+2*i] = ex(e, "w1.weight")[i*D+x]
					gu[(e*D+x)*2*I+2*i+1] = ex(e, "w3.weight")[i*D+x]
					down[(e*I+i)*D+x] = ex(e, "w2.weight")[x*I+i]
				}
				gub[e*2*I+2*i], gub[e*2*I+2*i+1] = ex(e, "w1.bias")[i], ex(e, "w3.bias")[i]
			}
			copy(db[e*D:], ex(e, "w2.bias"))
		}
		if mxfp4 {
			u8(p+"gate_up_proj_blocks", []int{E, 2 * I, D / 32, 16}, 0, 256)
			u8(p+"gate_up_proj_scales", []int{E, 2 * I, D / 32}, 122, 8)
			u8(p+"down_proj_blocks", []int{E, D, I / 32, 16}, 0, 256)
			u8(p+"down_proj_scales", []int{E, D, I / 32}, 122, 8)
		} else {
			f32(p+"gate_up_proj", []int{E, D, 2 * I}, gu)
			f32(p+"down_proj", []int{E, I, D}, down)
		}
		f32(p+"gate_up_proj_bias", []int{E, 2 * I}, gub)
		f32(p+"down_proj_bias", []int{E, D}, db)
	}
	dir := t.TempDir()
	b, err := safetensors.EncodeRaw(raw, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	types := make([]string, m.Layers)
	for i := range types {
		types[i] = "sliding_attention"
		if (i+1)%2 == 0 {
			types[i] = "full_attention"
		}
	}
	cfg := map[string]any{
		"model_type": "gpt_oss", "architectures": []string{"GptOssForCausalLM"}, "vocab_size": m.PaddedVocab(),
		"hidden_size": D, "intermediate_size": I, "num_hidden_layers": m.Layers, "num_attention_heads": m.Attention.Heads,
		"num_key_value_heads": m.Attention.KVHeads, "head_dim": m.Attention.HeadDim, "max_position_embeddings": m.SeqLen,
		"rms_norm_eps": m.NormEps, "rope_theta": m.RopeBase, "sliding_window": m.Attention.Window, "layer_types": types,
		"num_local_experts": E, "num_experts_per_tok": m.MoE.TopK, "experts_per_token": m.MoE.TopK,
		"swiglu_limit": m.MoE.SwigluLimit, "attention_bias": true, "tie_word_embeddings": false,
		"router_aux_loss_coef": m.MoE.BalanceLoss, "hidden_act": "silu",
	}
	if mxfp4 {
		cfg["quantization_config"] = map[string]any{"quant_method": "mxfp4"}
	}
	cb, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cb, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, orig, raw
}

// TestImportGptOssWeights: a gpt-oss folder imports into moec's per-expert tensors. Float
// fused experts come back bit for bit as the runtime model had them; MXFP4 experts decode
// to E2M1 value × 2^(scale − 127), two codes a byte, low nibble first, gate and up rows
// alternating.
func TestImportGptOssWeights(t *testing.T) {
	m := tinyModel(t, "tiny_gpt_oss_wide")
	dir, orig, _ := gptOssFolder(t, m, false)
	imp, err := ImportCheckpoint(dir, filepath.Join(t.TempDir(), "imported"), Options{Name: "tiny_gpt_oss_wide"})
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Model) != len(orig) {
		t.Fatalf("%d tensors imported, the model has %d", len(back.Model), len(orig))
	}
	for _, tn := range back.Model {
		if !bitsEqual(tn.Data, orig[tn.Name]) {
			t.Fatalf("%s did not come back bit-exact", tn.Name)
		}
	}

	dir, orig, raw := gptOssFolder(t, m, true)
	imp, err = ImportCheckpoint(dir, filepath.Join(t.TempDir(), "imported"), Options{Name: "tiny_gpt_oss_wide"})
	if err != nil {
		t.Fatal(err)
	}
	if len(imp.Notes) == 0 || !strings.Contains(imp.Notes[0], "MXFP4") {
		t.Errorf("notes %q, want the MXFP4 decoding named", imp.Notes)
	}
	back, err = checkpoint.Load(imp.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]safetensors.RawTensor{}
	for _, r := range raw {
		byName[r.Name] = r
	}
	e4m := []float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}
	decode := func(layer int, fused string, e, row, col, rows, cols int) float32 {
		p := fmt.Sprintf("model.layers.%d.mlp.experts.%s", layer, fused)
		blk, sc := byName[p+"_blocks"].Bytes, byName[p+"_scales"].Bytes
		by := blk[((e*rows+row)*cols+col)/2]
		code := by & 0x0f
		if col%2 == 1 {
			code = by >> 4
		}
		v := e4m[code&7]
		if code&8 != 0 {
			v = -v
		}
		return float32(v * math.Pow(2, float64(int(sc[(e*rows+row)*(cols/32)+col/32])-127)))
	}
	d, _ := m.Dims()
	E, D, I := m.MoE.Experts, d.D, d.EHidden
	checked := 0
	for _, tn := range back.Model {
		var l, e int
		var part string
		if n, _ := fmt.Sscanf(tn.Name, "model.layers.%d.block_sparse_moe.experts.%d.%s", &l, &e, &part); n != 3 {
			if !bitsEqual(tn.Data, orig[tn.Name]) {
				t.Errorf("%s changed", tn.Name)
			}
			continue
		}
		for i, v := range tn.Data {
			var want float32
			switch part {
			case "w1.weight":
				want = decode(l, "gate_up_proj", e, 2*(i/D), i%D, 2*I, D)
			case "w3.weight":
				want = decode(l, "gate_up_proj", e, 2*(i/D)+1, i%D, 2*I, D)
			case "w2.weight":
				want = decode(l, "down_proj", e, i/I, i%I, D, I)
			default:
				want = orig[tn.Name][i] // the biases stay float
			}
			if math.Float32bits(v) != math.Float32bits(want) {
				t.Fatalf("%s[%d] = %v, want %v", tn.Name, i, v, want)
			}
			checked++
		}
	}
	if want := m.Layers * E * (3*I*D + 2*I + D); checked != want {
		t.Errorf("%d expert values checked, the model has %d", checked, want)
	}
}
