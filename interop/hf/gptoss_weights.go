package hf

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"

	"github.com/moec-dev/moec/compiler/program"
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

// moecGptOss matches moec's tensors that gpt-oss names or shapes otherwise: the router and
// the routed experts' projections and biases.
var moecGptOss = regexp.MustCompile(`^(model\.layers\.\d+\.)block_sparse_moe\.(gate\.(weight|bias)|experts\.(\d+)\.(w1|w2|w3)\.(weight|bias))$`)

// gptOssFromMoec converts moec's tensors of m, in arrange's order, to GptOssForCausalLM's
// (the inverse of readGptOss on float weights): the router renamed mlp.router, and each
// layer's experts fused as GptOssExperts holds them, x·W: gate_up_proj [E, D, 2I] with
// the gate in the even columns and the up projection in the odd ones (its [..., ::2] and
// [..., 1::2]), gate_up_proj_bias [E, 2I] interleaved the same way, down_proj [E, I, D]
// and down_proj_bias [E, D]. The four fused tensors take the place of the layer's first
// expert tensor. It also says, for each tensor written, which of moec's it comes from.
func gptOssFromMoec(ts []safetensors.Tensor) ([]safetensors.Tensor, []string, error) {
	type layer struct {
		parts map[string]map[int]safetensors.Tensor // "w1.weight" → expert → tensor
		at    int
	}
	layers := map[string]*layer{}
	var order []string
	var out []safetensors.Tensor
	var from []string
	for _, t := range ts {
		g := moecGptOss.FindStringSubmatch(t.Name)
		switch {
		case g == nil:
			out = append(out, t)
			from = append(from, t.Name)
		case g[3] != "": // the router
			out = append(out, safetensors.Tensor{Name: g[1] + "mlp.router." + g[3], Shape: t.Shape, Data: t.Data})
			from = append(from, t.Name)
		default:
			l := layers[g[1]]
			if l == nil {
				l = &layer{parts: map[string]map[int]safetensors.Tensor{}, at: len(out)}
				layers[g[1]] = l
				order = append(order, g[1])
				for _, part := range [][2]string{{"gate_up_proj", "w1.weight + w3.weight"}, {"gate_up_proj_bias", "w1.bias + w3.bias"},
					{"down_proj", "w2.weight"}, {"down_proj_bias", "w2.bias"}} { // the order the loop below fills
					out = append(out, safetensors.Tensor{Name: g[1] + "mlp.experts." + part[0]})
					from = append(from, g[1]+"block_sparse_moe.experts.*."+part[1])
				}
			}
			key := g[5] + "." + g[6]
			if l.parts[key] == nil {
				l.parts[key] = map[int]safetensors.Tensor{}
			}
			e, _ := strconv.Atoi(g[4]) // the pattern's digits
			l.parts[key][e] = t
		}
	}
	for _, prefix := range order {
		l := layers[prefix]
		w1, w3, w2 := l.parts["w1.weight"], l.parts["w3.weight"], l.parts["w2.weight"]
		b1, b3, b2 := l.parts["w1.bias"], l.parts["w3.bias"], l.parts["w2.bias"]
		E := len(w1)
		if E == 0 || len(w3) != E || len(w2) != E || len(b1) != E || len(b3) != E || len(b2) != E {
			return nil, nil, fmt.Errorf("layer %s: gpt-oss experts need a weight and a bias for each of w1, w2 and w3 of every expert", prefix)
		}
		I, D := w1[0].Shape[0], w1[0].Shape[1]
		gateUp, gateUpBias := make([]float32, E*D*2*I), make([]float32, E*2*I)
		down, downBias := make([]float32, E*I*D), make([]float32, E*D)
		for e := 0; e < E; e++ {
			if len(w1[e].Data) != I*D || len(w3[e].Data) != I*D || len(w2[e].Data) != D*I || len(b1[e].Data) != I || len(b3[e].Data) != I || len(b2[e].Data) != D {
				return nil, nil, fmt.Errorf("layer %s expert %d: projections of unequal sizes", prefix, e)
			}
			for i := 0; i < I; i++ {
				for d := 0; d < D; d++ {
					gateUp[(e*D+d)*2*I+2*i] = w1[e].Data[i*D+d]
					gateUp[(e*D+d)*2*I+2*i+1] = w3[e].Data[i*D+d]
					down[(e*I+i)*D+d] = w2[e].Data[d*I+i]
				}
				gateUpBias[e*2*I+2*i], gateUpBias[e*2*I+2*i+1] = b1[e].Data[i], b3[e].Data[i]
			}
			copy(downBias[e*D:(e+1)*D], b2[e].Data)
		}
		out[l.at] = safetensors.Tensor{Name: out[l.at].Name, Shape: []int{E, D, 2 * I}, Data: gateUp}
		out[l.at+1] = safetensors.Tensor{Name: out[l.at+1].Name, Shape: []int{E, 2 * I}, Data: gateUpBias}
		out[l.at+2] = safetensors.Tensor{Name: out[l.at+2].Name, Shape: []int{E, I, D}, Data: down}
		out[l.at+3] = safetensors.Tensor{Name: out[l.at+3].Name, Shape: []int{E, D}, Data: downBias}
	}
	return out, from, nil
}

// gptOssLayoutFor reports whether m is a gpt-oss model as GptOssForCausalLM computes it
// (attention sinks beside clamped SwiGLU experts are gpt-oss's alone), and when it is not,
// what it lacks.
func gptOssLayoutFor(m *program.Model) (candidate bool, unmet []string) {
	e, a := m.MoE, m.Attention
	if e == nil || e.Experts == 0 || e.SwigluLimit == 0 || !a.Sinks {
		return false, nil
	}
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	need(e.Score == program.Softmax && e.Normalize, "a softmax over the top k (score = softmax, normalize = true)")
	need(e.RouterBias && e.ExpertBias, "biases on the router and the experts")
	need(e.SharedExperts == 0 && len(e.Layers) == 0 && e.FirstDense == 0 && e.Every <= 1 && !e.ParallelDense && !e.ParallelAttention, "MoE in every layer, no shared or parallel dense FFN")
	need(e.Router != program.RouteTokenEmbedding && !e.GateInput && e.RoutedScaleOrOne() == 1 && e.SparsemixerEps == 0 && e.Groups == 0 && e.AuxFreeBias == 0, "plain top-k routing")
	swigluDecoderNeeds(m, need)
	need(a.BiasQKV && a.BiasOut && !a.QKNorm && !a.QKL2Norm && a.ClipQKV == 0, "biases on Q, K, V and the output, no q/k norms or clipping")
	need(!a.MLA && !a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && a.NopeEvery == 0 && a.ChunkSize == 0 && a.NopeTemperature == 0, "plain grouped-query attention (no MLA, talking heads, sharing, position-free or chunked layers)")
	return true, unmet
}

// gptOssConfig sets GptOssConfig's fields for m: the layer types written out (sliding
// but in every full_every-th layer), the rope parameters in transformers 5's form too (its
// GptOssConfig takes yarn's defaults when rope_parameters is absent).
func gptOssConfig(cfg map[string]any, m *program.Model) {
	a, e := m.Attention, m.MoE
	cfg["intermediate_size"] = e.ExpertHidden
	cfg["num_local_experts"] = e.Experts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["experts_per_token"] = e.TopK
	cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
	cfg["swiglu_limit"] = floatField(e.SwigluLimit)
	alpha := e.SwigluAlpha
	if alpha == 0 {
		alpha = 1.702
	}
	cfg["swiglu_alpha"] = floatField(alpha)
	cfg["attention_bias"] = true
	types := make([]string, m.Layers)
	for i := range types {
		types[i] = "full_attention"
		if a.Window > 0 && (a.FullEvery == 0 || (i+1)%a.FullEvery != 0) {
			types[i] = "sliding_attention"
		}
	}
	cfg["layer_types"] = types
	cfg["sliding_window"] = nil
	if a.Window > 0 {
		cfg["sliding_window"] = a.Window
	}
	rope := map[string]any{"rope_type": "default", "rope_theta": floatField(m.RopeBase)}
	if rs := ropeScalingConfig(m); rs != nil {
		rope = rs
		rope["rope_theta"] = floatField(m.RopeBase)
		if _, ok := rope["original_max_position_embeddings"]; !ok {
			rope["original_max_position_embeddings"] = m.SeqLen
		}
	}
	cfg["rope_parameters"] = rope
}
