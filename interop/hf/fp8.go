package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Fine-grained FP8 checkpoints (DeepSeek-V3/R1/V3.1 as released, Kimi-K2, Qwen3's -FP8
// models): config.json's quantization_config is
//
//	{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
//
// and each quantised linear weight X.weight [out, in] is an F8_E4M3 tensor beside an F32
// X.weight_scale_inv [ceil(out/br), ceil(in/bc)], (br, bc) the block size: the float weight
// is e4m3(X.weight)[i, j] · X.weight_scale_inv[i/br, j/bc], the last blocks of a row or
// column ragged, as DeepSeek's inference/fp8_cast_bf16.py (weight_dequant) and transformers'
// integrations/finegrained_fp8.py compute it. The other tensors (embeddings, norms, the
// router, lm_head) are floats. moec dequantises the weights to float32 on import.

// fp8Block is a fine-grained FP8 scheme's block: rows × cols weights share a scale.
type fp8Block struct{ rows, cols int }

// fp8ConfigKeys are the quantization_config keys of a fine-grained FP8 checkpoint, as
// DeepSeek writes them and as transformers' FineGrainedFP8Config has them.
var fp8ConfigKeys = map[string]bool{
	"quant_method": true, "fmt": true, "activation_scheme": true, "weight_block_size": true,
	"scale_fmt": true, "modules_to_not_convert": true, "dequantize": true,
}

// parseFP8Config reads a quantization_config that must be fine-grained FP8, or says what
// else it is.
func parseFP8Config(raw json.RawMessage) (fp8Block, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return fp8Block{}, fmt.Errorf("it is not a JSON object")
	}
	str := func(key, def string) (string, error) {
		v, ok := fields[key]
		if !ok || string(v) == "null" {
			return def, nil
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", fmt.Errorf("%s is %s, not a string", key, compact(v))
		}
		return s, nil
	}
	method, err := str("quant_method", "")
	if err != nil {
		return fp8Block{}, err
	}
	if method != "fp8" {
		return fp8Block{}, fmt.Errorf("quant_method %q", method)
	}
	var unknown []string
	for k := range fields {
		if !fp8ConfigKeys[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fp8Block{}, fmt.Errorf("fp8 with %s, which moec does not know", strings.Join(unknown, ", "))
	}
	for _, c := range []struct{ key, def, want, why string }{
		{"fmt", "e4m3", "e4m3", "the weights would not be E4M3"},
		{"activation_scheme", "dynamic", "dynamic", "static activation scales belong to the FP8 kernels moec does not run"},
		{"scale_fmt", "ue8m0", "ue8m0", "the scales would not be float32 powers of two"},
	} {
		v, err := str(c.key, c.def)
		if err != nil {
			return fp8Block{}, err
		}
		if v != c.want {
			return fp8Block{}, fmt.Errorf("fp8 with %s %q (moec reads %s %q: %s)", c.key, v, c.key, c.want, c.why)
		}
	}
	block := fp8Block{128, 128} // FineGrainedFP8Config's default
	if v, ok := fields["weight_block_size"]; ok && string(v) != "null" {
		var b []int
		if json.Unmarshal(v, &b) != nil || len(b) != 2 || b[0] <= 0 || b[1] <= 0 {
			return fp8Block{}, fmt.Errorf("weight_block_size %s is not two positive integers [rows, columns]", compact(v))
		}
		block = fp8Block{b[0], b[1]}
	}
	return block, nil
}

// fp8Quantization reads quantization_config for the architectures whose weights are read
// tensor by tensor: a fine-grained FP8 one is accepted with a note, anything else refused.
func (r *reader) fp8Quantization() {
	raw := r.take("quantization_config")
	if raw == nil {
		return
	}
	block, err := parseFP8Config(raw)
	if err != nil {
		r.refuse("quantization_config", fmt.Sprintf("quantization %s: %v", compact(raw), err),
			"moec dequantises fine-grained FP8 checkpoints (quant_method fp8, fmt e4m3, dynamic activations, a weight_block_size) and imports float weights otherwise")
		return
	}
	r.notes = append(r.notes, fmt.Sprintf("quantization_config fp8: the linear weights are stored as E4M3 with a float32 scale per %d×%d block; `moec import hf --checkpoint` dequantises them to float32, the counts are of the float parameters (the scales apart), and moec computes in float32 where the FP8 kernels quantise activations too", block.rows, block.cols))
}

// fp8BlockOf returns the block size of config's fine-grained FP8 quantization_config, and
// whether it has one (ImportConfig has already refused any other).
func fp8BlockOf(config []byte) (fp8Block, bool) {
	var c struct {
		Q json.RawMessage `json:"quantization_config"`
	}
	if json.Unmarshal(config, &c) != nil || len(c.Q) == 0 || string(c.Q) == "null" {
		return fp8Block{}, false
	}
	b, err := parseFP8Config(c.Q)
	return b, err == nil
}

// fp8ScaleSuffix names a weight's block scales: X.weight's are X.weight_scale_inv.
const fp8ScaleSuffix = "_scale_inv"

// readFP8 reads the safetensors files of a fine-grained FP8 checkpoint into float32
// tensors with moec's names (layout's renaming): each F8_E4M3 weight dequantised with its
// scales, which may lie in another file, the float tensors as they are.
func readFP8(files []string, block fp8Block, skip func(string) bool, layout Layout) ([]safetensors.Tensor, error) {
	var all []safetensors.RawTensor
	byName := map[string]safetensors.RawTensor{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "reading weights")
		}
		raw, _, err := safetensors.DecodeRaw(b)
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeBadSafetensors, err, "reading %s", f)
		}
		for _, t := range raw {
			all = append(all, t)
			byName[t.Name] = t
		}
	}
	var out []safetensors.Tensor
	for _, t := range all {
		if base, isScale := strings.CutSuffix(t.Name, fp8ScaleSuffix); isScale {
			w, ok := byName[base]
			switch {
			case !ok:
				return nil, diag.Runtimef(diag.CodeWeightsMismatch, "FP8 checkpoint: %s holds block scales, but the checkpoint has no tensor %s for them to scale", t.Name, base)
			case w.DType != "F8_E4M3":
				return nil, diag.Runtimef(diag.CodeWeightsMismatch, "FP8 checkpoint: %s holds block scales, but %s is %s, not F8_E4M3", t.Name, base, w.DType)
			}
			continue // read with its weight
		}
		if skip(t.Name) {
			continue
		}
		var data []float32
		var err error
		switch t.DType {
		case "F8_E4M3":
			scale, ok := byName[t.Name+fp8ScaleSuffix]
			if !ok {
				return nil, diag.Runtimef(diag.CodeWeightsMismatch, "FP8 checkpoint: %s is F8_E4M3 but its block scales %s are missing", t.Name, t.Name+fp8ScaleSuffix)
			}
			data, err = dequantFP8(t, scale, block)
		case "F32", "F64", "F16", "BF16":
			data, err = floatData(t)
		default:
			err = fmt.Errorf("%s is %s: an FP8 checkpoint holds F8_E4M3 weights, their scales and float tensors", t.Name, t.DType)
		}
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "FP8 checkpoint")
		}
		out = append(out, safetensors.Tensor{Name: toMoec(layout, t.Name), Shape: t.Shape, Data: data})
	}
	return out, nil
}

// floatData decodes a float tensor of any width to float32 through safetensors' decoder.
func floatData(t safetensors.RawTensor) ([]float32, error) {
	b, err := safetensors.EncodeRaw([]safetensors.RawTensor{t}, nil)
	if err != nil {
		return nil, err
	}
	f, err := safetensors.Decode(b)
	if err != nil {
		return nil, err
	}
	return f.Tensors[0].Data, nil
}

// dequantFP8 is weight_dequant: w [out, in] of E4M3 bytes times scale [ceil(out/rows),
// ceil(in/cols)], each product rounded to float32 once.
func dequantFP8(w, scale safetensors.RawTensor, block fp8Block) ([]float32, error) {
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("%s is F8_E4M3 of shape %v; block-wise FP8 weights are matrices [out, in]", w.Name, w.Shape)
	}
	out, in := w.Shape[0], w.Shape[1]
	sr, sc := (out+block.rows-1)/block.rows, (in+block.cols-1)/block.cols
	if len(scale.Shape) != 2 || scale.Shape[0] != sr || scale.Shape[1] != sc {
		return nil, fmt.Errorf("%s has shape %v; %s [%d, %d] in blocks of %d×%d (weight_block_size) needs scales [%d, %d]",
			scale.Name, scale.Shape, w.Name, out, in, block.rows, block.cols, sr, sc)
	}
	s, err := floatData(scale)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", scale.Name, err)
	}
	data := make([]float32, out*in)
	for i := 0; i < out; i++ {
		row := s[(i/block.rows)*sc:]
		for j, b := range w.Bytes[i*in : (i+1)*in] {
			data[i*in+j] = safetensors.E4M3(b) * row[j/block.cols]
		}
	}
	return data, nil
}

// fp8WithoutConfig explains why the float reader refused file when the file holds FP8
// tensors but config.json declares no quantization_config (a config copied without it, or
// edited): the weights are quantised, and only the declared scheme says how to dequantise
// them. It returns nil when the file holds no FP8 tensor, so that the reader's own error
// stands.
func fp8WithoutConfig(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	raw, _, err := safetensors.DecodeRaw(b)
	if err != nil {
		return nil
	}
	var fp8, scales int
	first, dtype := "", ""
	for _, t := range raw {
		if strings.HasPrefix(t.DType, "F8_") {
			if fp8 == 0 {
				first, dtype = t.Name, t.DType
			}
			fp8++
		}
		if strings.HasSuffix(t.Name, fp8ScaleSuffix) {
			scales++
		}
	}
	if fp8 == 0 {
		return nil
	}
	d := diag.Runtimef(diag.CodeWeightsMismatch,
		"%s holds %d %s weights (the first %s) and %d block scales (*%s), but config.json declares no quantization_config: moec dequantises FP8 weights only by the scheme the config names",
		file, fp8, dtype, first, scales, fp8ScaleSuffix)
	d.Suggestion = `restore the checkpoint's quantization_config in config.json, as published with these weights (DeepSeek-V3's: {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})`
	return d
}
