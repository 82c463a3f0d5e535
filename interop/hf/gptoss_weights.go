package hf

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// fp4Magnitudes are the magnitudes of the eight E2M1 codes; the fourth bit is the sign:
// transformers' FP4_VALUES (integrations/mxfp4.py), the OCP Microscaling format's table.
var fp4Magnitudes = [8]float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}

// fp4 is the value of a 4-bit E2M1 code; code 8 is −0, as in FP4_VALUES.
func fp4(code byte) float64 {
	v := fp4Magnitudes[code&7]
	if code&8 != 0 {
		return -v
	}
	return v
}

// gptOssExpert matches the fused expert tensors of a gpt-oss layer: MXFP4 blocks and
// scales as released, or the float tensors of a dequantised copy, and their biases.
var gptOssExpert = regexp.MustCompile(`^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(_blocks|_scales|_bias)?$`)

// readGptOss reads the safetensors files of a gpt-oss folder into moec's tensors: the
// attention, norms, router and embeddings renamed, and each layer's fused experts split
// into moec's per-expert w1 (gate), w3 (up) and w2 (down) with their biases. MXFP4 experts
// (the *_blocks and *_scales tensors) are decoded as transformers' convert_moe_packed_tensors
// does: each byte holds two E2M1 codes, low nibble first, and each block of 32 values
// shares the power of two 2^(scale−127). gate_up's rows alternate gate and up (its
// [..., ::2] and [..., 1::2]).
func readGptOss(files []string, skip func(string) bool) ([]safetensors.Tensor, error) {
	var plain []safetensors.RawTensor
	fused := map[string]map[string]safetensors.RawTensor{} // layer → part → tensor
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
			if g := gptOssExpert.FindStringSubmatch(t.Name); g != nil {
				if fused[g[1]] == nil {
					fused[g[1]] = map[string]safetensors.RawTensor{}
				}
				fused[g[1]][g[2]+g[3]] = t
				continue
			}
			if !skip(t.Name) {
				plain = append(plain, t)
			}
		}
	}
	out, err := floats(plain)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Name = toMoec(LayoutGptOss, out[i].Name)
	}
	layers := make([]string, 0, len(fused))
	for l := range fused {
		layers = append(layers, l)
	}
	sort.Strings(layers)
	for _, l := range layers {
		ts, err := gptOssLayerExperts(l, fused[l])
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "layer %s's experts", l)
		}
		out = append(out, ts...)
	}
	return out, nil
}

// floats converts float tensors of any width to float32 through safetensors' own decoder.
func floats(raw []safetensors.RawTensor) ([]safetensors.Tensor, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	b, err := safetensors.EncodeRaw(raw, nil)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadSafetensors, err, "reading weights")
	}
	f, err := safetensors.Decode(b)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadSafetensors, err, "reading weights (a tensor other than the MXFP4 experts is not float)")
	}
	return f.Tensors, nil
}

// gptOssLayerExperts splits one layer's fused experts (part name → tensor).
func gptOssLayerExperts(layer string, parts map[string]safetensors.RawTensor) ([]safetensors.Tensor, error) {
	gateUp, err := expertMatrix(parts, "gate_up_proj") // [E, 2I, D]
	if err != nil {
		return nil, err
	}
	down, err := expertMatrix(parts, "down_proj") // [E, D, I]
	if err != nil {
		return nil, err
	}
	biases, err := floats([]safetensors.RawTensor{parts["gate_up_proj_bias"], parts["down_proj_bias"]})
	if err != nil || len(biases) != 2 {
		return nil, fmt.Errorf("gate_up_proj_bias and down_proj_bias: %v", err)
	}
	byName := map[string]safetensors.Tensor{}
	for _, b := range biases {
		byName[b.Name] = b
	}
	gub, db := byName[parts["gate_up_proj_bias"].Name], byName[parts["down_proj_bias"].Name]
	E, twoI, D := gateUp.shape[0], gateUp.shape[1], gateUp.shape[2]
	I := twoI / 2
	if twoI%2 != 0 || down.shape[0] != E || down.shape[1] != D || down.shape[2] != I ||
		len(gub.Data) != E*twoI || len(db.Data) != E*D {
		return nil, fmt.Errorf("shapes gate_up %v, down %v, biases %v and %v do not fit one another", gateUp.shape, down.shape, gub.Shape, db.Shape)
	}
	var out []safetensors.Tensor
	for e := 0; e < E; e++ {
		p := fmt.Sprintf("model.layers.%s.block_sparse_moe.experts.%d.", layer, e)
		w1, w3 := make([]float32, I*D), make([]float32, I*D)
		b1, b3 := make([]float32, I), make([]float32, I)
		for i := 0; i < I; i++ {
			copy(w1[i*D:(i+1)*D], gateUp.data[(e*twoI+2*i)*D:])
			copy(w3[i*D:(i+1)*D], gateUp.data[(e*twoI+2*i+1)*D:])
			b1[i], b3[i] = gub.Data[e*twoI+2*i], gub.Data[e*twoI+2*i+1]
		}
		out = append(out,
			safetensors.Tensor{Name: p + "w1.weight", Shape: []int{I, D}, Data: w1},
			safetensors.Tensor{Name: p + "w1.bias", Shape: []int{I}, Data: b1},
			safetensors.Tensor{Name: p + "w2.weight", Shape: []int{D, I}, Data: append([]float32(nil), down.data[e*D*I:(e+1)*D*I]...)},
			safetensors.Tensor{Name: p + "w2.bias", Shape: []int{D}, Data: append([]float32(nil), db.Data[e*D:(e+1)*D]...)},
			safetensors.Tensor{Name: p + "w3.weight", Shape: []int{I, D}, Data: w3},
			safetensors.Tensor{Name: p + "w3.bias", Shape: []int{I}, Data: b3},
		)
	}
	return out, nil
}

// matrix is a stack of per-expert matrices [E, rows, cols], rows the output features.
type matrix struct {
	shape [3]int
	data  []float32
}

// expertMatrix decodes name's experts as [E, out, in]: from MXFP4 blocks [E, out, in/32,
// 16] and scales [E, out, in/32], or from the float tensor [E, in, out] transformers keeps
// (gate_up_proj [E, D, 2I], down_proj [E, I, D]), transposed.
func expertMatrix(parts map[string]safetensors.RawTensor, name string) (matrix, error) {
	blocks, hasBlocks := parts[name+"_blocks"]
	scales, hasScales := parts[name+"_scales"]
	if hasBlocks != hasScales {
		return matrix{}, fmt.Errorf("%s: MXFP4 needs both %s_blocks and %s_scales", name, name, name)
	}
	if hasBlocks {
		s := blocks.Shape
		if blocks.DType != "U8" || scales.DType != "U8" || len(s) != 4 || s[3] != 16 || len(scales.Shape) != 3 ||
			scales.Shape[0] != s[0] || scales.Shape[1] != s[1] || scales.Shape[2] != s[2] {
			return matrix{}, fmt.Errorf("%s: MXFP4 blocks %s%v and scales %s%v are not [E, rows, groups, 16] and [E, rows, groups] bytes",
				name, blocks.DType, s, scales.DType, scales.Shape)
		}
		m := matrix{shape: [3]int{s[0], s[1], s[2] * 32}}
		m.data = make([]float32, s[0]*s[1]*s[2]*32)
		for g, sc := range scales.Bytes { // one group of 32 values per scale
			exp := int(sc) - 127
			for b, v := range blocks.Bytes[g*16 : (g+1)*16] {
				m.data[g*32+2*b] = float32(math.Ldexp(fp4(v&0x0f), exp))
				m.data[g*32+2*b+1] = float32(math.Ldexp(fp4(v>>4), exp))
			}
		}
		return m, nil
	}
	t, ok := parts[name]
	if !ok {
		return matrix{}, fmt.Errorf("%s missing (neither %s nor %s_blocks)", name, name, name)
	}
	fs, err := floats([]safetensors.RawTensor{t})
	if err != nil {
		return matrix{}, err
	}
	if len(t.Shape) != 3 {
		return matrix{}, fmt.Errorf("%s: shape %v, want [E, in, out]", name, t.Shape)
	}
	E, in, outF := t.Shape[0], t.Shape[1], t.Shape[2]
	m := matrix{shape: [3]int{E, outF, in}, data: make([]float32, E*in*outF)}
	src := fs[0].Data
	for e := 0; e < E; e++ {
		for i := 0; i < in; i++ {
			for o := 0; o < outF; o++ {
				m.data[(e*outF+o)*in+i] = src[(e*in+i)*outF+o]
			}
		}
	}
	return m, nil
}

// gptOssRouter is gpt-oss's router, moec's block_sparse_moe.gate.
var gptOssRouter = regexp.MustCompile(`^(model\.layers\.\d+\.)mlp\.router\.`)
