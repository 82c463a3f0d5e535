package hf

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// fp8Quantised matches the tensors DeepSeek-V3's FP8 release stores as E4M3: every linear
// projection of a layer (attention, dense MLP, routed and shared experts), not the
// embeddings, norms, router gate, selection bias or lm_head.
var fp8Quantised = regexp.MustCompile(`^model\.layers\.\d+\..*_proj(_with_mqa)?\.weight$`)

// e4m3Encode rounds x to the nearest E4M3 code, ties to the even code, saturating at ±448:
// written here from the format (the positive finite codes 0x00–0x7E in increasing order),
// apart from the importer.
func e4m3Encode(x float32) byte {
	sign := byte(0)
	if x < 0 {
		sign, x = 0x80, -x
	}
	if x >= 448 {
		return sign | 0x7e
	}
	c := byte(0)
	for c < 0x7e && safetensors.E4M3(c+1) <= x {
		c++
	}
	if c == 0x7e || safetensors.E4M3(c) == x {
		return sign | c
	}
	lo, hi := x-safetensors.E4M3(c), safetensors.E4M3(c+1)-x
	if hi < lo || (hi == lo && c&1 == 1) {
		c++
	}
	return sign | c
}

// fp8Checkpoint is a fine-grained FP8 Hugging Face folder in the making: its config and
// its tensors, the block scales in a second file as a sharded release may place them.
type fp8Checkpoint struct {
	config          map[string]any
	weights, scales []safetensors.RawTensor
}

func (c *fp8Checkpoint) write(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cb, err := json.Marshal(c.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), cb, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, ts := range map[string][]safetensors.RawTensor{"model-00001-of-00002.safetensors": c.weights, "model-00002-of-00002.safetensors": c.scales} {
		b, err := safetensors.EncodeRaw(ts, map[string]string{"format": "pt"})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func f32Raw(name string, shape []int, data []float32) safetensors.RawTensor {
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return safetensors.RawTensor{Name: name, DType: "F32", Shape: shape, Bytes: b}
}

// deepseekFP8 quantises the tiny DeepSeek-V3 export as DeepSeek's FP8 release is made:
// each linear weight [out, in] cut into blocks of rows × cols (the last ones ragged), each
// block scaled by its largest magnitude / 448 and rounded to E4M3. It returns the FP8
// folder, a float folder holding the test's own dequantisation e4m3 · scale in float32
// (what the FP8 import must give bit for bit) and the names of the quantised weights.
func deepseekFP8(t *testing.T, rows, cols int) (*fp8Checkpoint, string, map[string][]int) {
	t.Helper()
	out, wf, _ := exportDeepSeek(t, "tiny_deepseek_v3")
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(out, ConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	q := &fp8Checkpoint{config: map[string]any{}}
	for k, v := range cfg {
		q.config[k] = v
	}
	q.config["quantization_config"] = map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": []int{rows, cols}}
	var dequant []safetensors.Tensor
	quantised := map[string][]int{}
	for _, tn := range wf.Tensors {
		if !fp8Quantised.MatchString(tn.Name) {
			q.weights = append(q.weights, f32Raw(tn.Name, tn.Shape, tn.Data))
			dequant = append(dequant, tn)
			continue
		}
		o, in := tn.Shape[0], tn.Shape[1]
		sr, sc := (o+rows-1)/rows, (in+cols-1)/cols
		scale := make([]float32, sr*sc)
		for i := 0; i < o; i++ {
			for j := 0; j < in; j++ {
				s := &scale[(i/rows)*sc+j/cols]
				*s = max(*s, float32(math.Abs(float64(tn.Data[i*in+j])))/448)
			}
		}
		codes, deq := make([]byte, o*in), make([]float32, o*in)
		for i := 0; i < o; i++ {
			for j := 0; j < in; j++ {
				s := scale[(i/rows)*sc+j/cols]
				codes[i*in+j] = e4m3Encode(tn.Data[i*in+j] / s)
				deq[i*in+j] = safetensors.E4M3(codes[i*in+j]) * s
			}
		}
		q.weights = append(q.weights, safetensors.RawTensor{Name: tn.Name, DType: "F8_E4M3", Shape: tn.Shape, Bytes: codes})
		q.scales = append(q.scales, f32Raw(tn.Name+"_scale_inv", []int{sr, sc}, scale))
		dequant = append(dequant, safetensors.Tensor{Name: tn.Name, Shape: tn.Shape, Data: deq})
		quantised[tn.Name] = tn.Shape
	}
	float := t.TempDir()
	if err := os.WriteFile(filepath.Join(float, ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	fb, err := safetensors.Encode(dequant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(float, WeightsFile), fb, 0o644); err != nil {
		t.Fatal(err)
	}
	return q, float, quantised
}

// TestImportFP8DeepSeek: a DeepSeek-V3 folder in DeepSeek's fine-grained FP8 form (blocks
// of 8 × 6, so that the last blocks of rows and of columns are ragged; the scales in
// another file) imports to exactly the tensors the float folder of the test's own
// dequantisation imports to, bit for bit, with the same counts; and the model's logits
// stay close to those of the float model it was quantised from.
func TestImportFP8DeepSeek(t *testing.T) {
	q, floatDir, quantised := deepseekFP8(t, 8, 6)
	var raggedRows, raggedCols bool
	for _, s := range quantised {
		raggedRows = raggedRows || s[0]%8 != 0
		raggedCols = raggedCols || s[1]%6 != 0
	}
	if len(quantised) < 10 || !raggedRows || !raggedCols {
		t.Fatalf("%d quantised weights, ragged rows %v, ragged columns %v: the test needs both kinds of ragged block", len(quantised), raggedRows, raggedCols)
	}
	impQ, err := ImportCheckpoint(q.write(t), filepath.Join(t.TempDir(), "fp8"), Options{Name: "tiny_deepseek_v3"})
	if err != nil {
		t.Fatal(err)
	}
	impF, err := ImportCheckpoint(floatDir, filepath.Join(t.TempDir(), "float"), Options{Name: "tiny_deepseek_v3"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(impQ.Counts, impF.Counts) {
		t.Errorf("FP8 import counts %+v, the float import %+v", impQ.Counts, impF.Counts)
	}
	if !strings.Contains(strings.Join(impQ.Notes, "\n"), "quantization_config fp8") || !strings.Contains(string(impQ.Source), "dequantises them to float32") {
		t.Errorf("the import does not note the FP8 dequantisation: %q", impQ.Notes)
	}
	gotQ, err := checkpoint.Load(impQ.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	gotF, err := checkpoint.Load(impF.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotQ.Model) != len(gotF.Model) {
		t.Fatalf("%d tensors imported from FP8, %d from float", len(gotQ.Model), len(gotF.Model))
	}
	want := map[string]safetensors.Tensor{}
	for _, tn := range gotF.Model {
		want[tn.Name] = tn
	}
	for _, tn := range gotQ.Model {
		if w, ok := want[tn.Name]; !ok || !bitsEqual(tn.Data, w.Data) {
			t.Errorf("%s: the FP8 import differs from the test's dequantisation", tn.Name)
		}
	}

	m := deepseekModel(t, "tiny_deepseek_v3")
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	batch := nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}
	ref, err := tinyNet(t, m).Logits(batch, nn.StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	net, _, err := train.LoadNet(impQ.Checkpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := net.(*nn.Model).Logits(batch, nn.StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var diff, norm float64
	for i := range ref {
		d := float64(got[i] - ref[i])
		diff += d * d
		norm += float64(ref[i]) * float64(ref[i])
	}
	rel := math.Sqrt(diff / norm)
	t.Logf("logits of the FP8 import against the float model: relative RMS difference %.4g", rel)
	if rel == 0 || rel > 0.05 {
		t.Errorf("relative RMS difference %.4g between the FP8 import's logits and the float model's; E4M3 weights should leave them close but not equal", rel)
	}
}

// TestImportFP8Refusals: a quantised weight without its scales, scales without their
// weight or beside a float one, scales of another block size and an FP8 tensor that is
// not a matrix are each refused with E0904 naming the tensor.
func TestImportFP8Refusals(t *testing.T) {
	const w = "model.layers.0.self_attn.q_a_proj.weight"
	drop := func(ts []safetensors.RawTensor, name string) []safetensors.RawTensor {
		var out []safetensors.RawTensor
		for _, tn := range ts {
			if tn.Name != name {
				out = append(out, tn)
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		edit func(q *fp8Checkpoint)
		want string
	}{
		{"a weight without its scales", func(q *fp8Checkpoint) { q.scales = drop(q.scales, w+"_scale_inv") },
			w + " is F8_E4M3 but its block scales " + w + "_scale_inv are missing"},
		{"scales without their weight", func(q *fp8Checkpoint) { q.weights = drop(q.weights, w) },
			w + "_scale_inv holds block scales, but the checkpoint has no tensor " + w},
		{"scales of a float weight", func(q *fp8Checkpoint) {
			for i, tn := range q.weights {
				if tn.Name == w {
					q.weights[i] = f32Raw(w, tn.Shape, make([]float32, tn.Shape[0]*tn.Shape[1]))
				}
			}
		}, w + "_scale_inv holds block scales, but " + w + " is F32, not F8_E4M3"},
		{"scales of another block size", func(q *fp8Checkpoint) {
			q.config["quantization_config"].(map[string]any)["weight_block_size"] = []int{8, 8}
		}, "_scale_inv has shape"},
		{"an FP8 tensor that is not a matrix", func(q *fp8Checkpoint) {
			for i, tn := range q.weights {
				if tn.Name == w {
					q.weights[i].Shape = []int{tn.Shape[0] * tn.Shape[1]}
				}
			}
		}, w + " is F8_E4M3 of shape"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, _, _ := deepseekFP8(t, 8, 6)
			c.edit(q)
			_, err := ImportCheckpoint(q.write(t), filepath.Join(t.TempDir(), "imported"), Options{Name: "tiny_deepseek_v3"})
			if err == nil || diag.CodeOf(err) != diag.CodeWeightsMismatch || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want E0904 saying %q", err, c.want)
			}
		})
	}
}

// TestImportFP8Config: DeepSeek-V3's released quantization_config (and V3.1's, whose
// scales are powers of two) imports with a note and the float model's counts; any other
// quantization, or FP8 in another form, is refused naming what it is.
func TestImportFP8Config(t *testing.T) {
	plain, err := ImportConfig(readConfig(t, "deepseek-v3.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	released := map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": []int{128, 128}}
	v31 := map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "scale_fmt": "ue8m0", "weight_block_size": []int{128, 128}}
	for name, q := range map[string]any{"V3": released, "V3.1": v31} {
		res, err := ImportConfig(editedConfig(t, "deepseek-v3.json", map[string]any{"quantization_config": q}), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(res.Counts, plain.Counts) || !strings.Contains(strings.Join(res.Notes, "\n"), "128×128 block") {
			t.Errorf("%s: counts %d (float model %d), notes %q", name, res.Counts.TotalAll, plain.Counts.TotalAll, res.Notes)
		}
	}
	with := func(edits map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range released {
			out[k] = v
		}
		for k, v := range edits {
			out[k] = v
		}
		return out
	}
	for _, c := range []struct {
		name string
		q    any
		want string
	}{
		{"gptq", map[string]any{"quant_method": "gptq", "bits": 4}, `quant_method "gptq"`},
		{"static activations", with(map[string]any{"activation_scheme": "static"}), `activation_scheme "static"`},
		{"e5m2", with(map[string]any{"fmt": "e5m2"}), `fmt "e5m2"`},
		{"a block size of one number", with(map[string]any{"weight_block_size": []int{128}}), "weight_block_size [128] is not two positive integers"},
		{"an unknown key", with(map[string]any{"group_size": 64}), "fp8 with group_size, which moec does not know"},
	} {
		_, err := ImportConfig(editedConfig(t, "deepseek-v3.json", map[string]any{"quantization_config": c.q}), Options{})
		if err == nil || diag.CodeOf(err) != diag.CodeInexpressible || !strings.Contains(err.Error(), "quantization_config") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want quantization_config refused saying %q", c.name, err, c.want)
		}
	}
}
