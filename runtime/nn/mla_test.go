package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/quant"
)

// tinyMLA is a tiny DeepSeek-V3-shaped model: latent attention with a low-rank query, one
// dense layer then MoE layers of six sigmoid-scored experts in three groups, routed on
// biased scores (aux_free_bias), one shared expert, routed_scale.
func tinyMLA() *program.Model {
	m := tinyMoE()
	m.Layers = 3
	m.Attention = program.Attention{Heads: 2, KVHeads: 2, HeadDim: 4, ShareWeights: 1, MLA: true,
		QLoraRank: 6, KVLoraRank: 5, QKNopeHeadDim: 3, QKRopeHeadDim: 2, VHeadDim: 4}
	e := m.MoE
	e.Experts, e.Groups, e.TopKGroups, e.Score, e.AuxFreeBias, e.RoutedScale = 6, 3, 2, program.Sigmoid, 0.01, 2.5
	e.SharedExperts, e.SharedHidden, e.FirstDense = 1, 5, 1
	return m
}

// mlaCases are the latent-attention models the decoding tests run: DeepSeek-V3's shape
// with yarn's mscale, and DeepSeek-V2-Lite's full-rank query with a window.
func mlaCases() map[string]func() *program.Model {
	return map[string]func() *program.Model{
		"q_lora_yarn_aux_free_groups": func() *program.Model {
			m := tinyMLA()
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
			m.RopeScaling = &program.RopeScaling{Type: program.RopeYarn, Factor: 4, OriginalSeqLen: 4, Mscale: 1, MscaleAllDim: 0.8}
			return m
		},
		"full_rank_query_window": func() *program.Model {
			m := tinyMLA()
			m.Attention.QLoraRank, m.Attention.Window, m.Attention.QKRopeHeadDim = 0, 3, 4
			m.MoE.AuxFreeBias, m.MoE.Groups, m.MoE.Score = 0, 0, program.Softmax
			return m
		},
	}
}

// randomised builds cfg and moves every weight (the selection biases too) off its start.
func randomised(t *testing.T, cfg *program.Model, seed uint64) *Model {
	t.Helper()
	m, err := New(cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 6))
	for _, p := range m.Params() {
		for i := range p.W {
			p.W[i] += float32(0.1 * r.NormFloat64())
		}
	}
	return m
}

// TestMLADecoderMatchesLogits: decoding from the latent cache (kv_b_proj absorbed) gives
// the full-sequence logits position by position.
func TestMLADecoderMatchesLogits(t *testing.T) {
	for name, mk := range mlaCases() {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			m := randomised(t, cfg, 5)
			const B, T = 3, 7
			b := randBatch(rand.New(rand.NewPCG(1, 2)), cfg.Vocab, B, T)
			want, err := m.Logits(b, StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dec := m.NewDecoder(B, T)
			if dec.kc[0] != nil || len(dec.mla.cache[0]) != B*T*(5+int(cfg.Attention.QKRopeHeadDim)) {
				t.Errorf("the decoder caches %d keys and %d latent values in layer 0; want only the latent and the rope key", len(dec.kc[0]), len(dec.mla.cache[0]))
			}
			for pass := 0; pass < 2; pass++ {
				dec.Reset()
				if worst := decodeGap(t, dec, b, want, int(cfg.PaddedVocab())); worst > 1e-4 {
					t.Errorf("pass %d: decoder logits differ from Logits by %g", pass, worst)
				}
			}
		})
	}
}

// TestMLAFeedMatchesStep: Feed (chunked prefill beside decoding) and Prefill give the
// logits of Step.
func TestMLAFeedMatchesStep(t *testing.T) {
	for name, mk := range mlaCases() {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			m := randomised(t, cfg, 9)
			r := rand.New(rand.NewPCG(3, 4))
			const T = 40 // longer than attnBlockRows
			V := int(cfg.PaddedVocab())
			seqs, want := make([][]int32, 2), make([][][]float32, 2)
			for s := range seqs {
				one := m.NewDecoder(1, T)
				for range T {
					tok := int32(r.IntN(int(cfg.Vocab)))
					seqs[s] = append(seqs[s], tok)
					lg, err := one.Step([]int32{tok})
					if err != nil {
						t.Fatal(err)
					}
					want[s] = append(want[s], append([]float32(nil), lg...))
				}
			}
			for _, chunk := range []int{1, 3, 33, T} {
				t.Run(fmt.Sprint("chunk", chunk), func(t *testing.T) {
					dec := m.NewDecoder(2, T)
					fed := make([]int, 2)
					for call := 0; fed[0] < T || fed[1] < T; call++ {
						runs, pos := make([][]int32, 2), make([]int, 2)
						for s, size := range []int{chunk, 1} {
							n := min(size, T-fed[s])
							runs[s], pos[s] = seqs[s][fed[s]:fed[s]+n], fed[s]
						}
						lg, err := dec.Feed(runs, pos)
						if err != nil {
							t.Fatal(err)
						}
						for s, run := range runs {
							if len(run) == 0 {
								continue
							}
							fed[s] += len(run)
							if d := relDiff(lg[s*V:(s+1)*V], want[s][fed[s]-1]); d > 1e-5 {
								t.Fatalf("call %d sequence %d after position %d: logits differ by %g (relative)", call, s, fed[s]-1, d)
							}
						}
					}
				})
			}
			one := m.NewDecoder(1, T)
			lg, err := one.Prefill(seqs[0][:T-1])
			if err != nil {
				t.Fatal(err)
			}
			if d := relDiff(lg, want[0][T-2]); d > 1e-5 {
				t.Errorf("Prefill: logits differ by %g (relative)", d)
			}
		})
	}
}

// TestMLATensors: the runtime creates exactly the tensors compiler/params lists for latent
// attention, with transformers' DeepseekV3Attention names and shapes, and as many
// parameters as compiler/analysis counts (plus the selection biases, which it counts as
// buffers).
func TestMLATensors(t *testing.T) {
	cfg := tinyMLA()
	cfg.Attention.BiasQKV, cfg.Attention.BiasOut = true, true
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := ParamList(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(lay) != len(m.Params()) {
		t.Fatalf("ParamList has %d parameters, New %d", len(lay), len(m.Params()))
	}
	shapes := map[string][]int{}
	var n, buffers int64
	for i, p := range m.Params() {
		if lay[i].Name != p.Name || !slices.Equal(lay[i].Shape, p.Shape) {
			t.Errorf("parameter %d: ParamList %s %v, New %s %v", i, lay[i].Name, lay[i].Shape, p.Name, p.Shape)
		}
		shapes[p.Name] = p.Shape
		if p.ID.Role.String() == "router_correction" {
			buffers += int64(len(p.W))
			continue
		}
		n += int64(len(p.W))
	}
	const l = "model.layers.1."
	for name, want := range map[string][]int{
		l + "self_attn.q_a_proj.weight":                     {6, 8},
		l + "self_attn.q_a_proj.bias":                       {6},
		l + "self_attn.q_a_layernorm.weight":                {6},
		l + "self_attn.q_b_proj.weight":                     {2 * 5, 6},
		l + "self_attn.kv_a_proj_with_mqa.weight":           {5 + 2, 8},
		l + "self_attn.kv_a_proj_with_mqa.bias":             {5 + 2},
		l + "self_attn.kv_a_layernorm.weight":               {5},
		l + "self_attn.kv_b_proj.weight":                    {2 * (3 + 4), 5},
		l + "self_attn.o_proj.weight":                       {8, 2 * 4},
		l + "self_attn.o_proj.bias":                         {8},
		l + "block_sparse_moe.gate.e_score_correction_bias": {6},
	} {
		if !slices.Equal(shapes[name], want) {
			t.Errorf("%s: shape %v, want %v", name, shapes[name], want)
		}
	}
	for _, absent := range []string{l + "self_attn.q_proj.weight", l + "self_attn.k_proj.weight", "model.layers.0.block_sparse_moe.gate.e_score_correction_bias"} {
		if _, ok := shapes[absent]; ok {
			t.Errorf("%s exists", absent)
		}
	}
	c := analysis.Count(cfg)
	if c.TotalAll != n {
		t.Errorf("runtime holds %d parameters, compiler/analysis counts %d", n, c.TotalAll)
	}
	if buffers != 2*6 {
		t.Errorf("%d selection-bias entries, want 2 MoE layers × 6 experts", buffers)
	}
}

// TestRouterBiasChoosesAndMoves: the selection bias decides which experts a token takes but
// not its gates, a group scores its two best biased experts, and UpdateRouterBias moves the
// bias by aux_free_bias·sign(mean load − load), as the DeepSeek-V3 report's update.
func TestRouterBiasChoosesAndMoves(t *testing.T) {
	cfg := tinyMLA()
	m := randomised(t, cfg, 11)
	c := m.c
	mp := c.layers[1].moe
	w := newMoEWS(c.d, mp, 1)
	// One token's scores over three groups of two experts.
	st := []float32{0.9, 0.1, 0.6, 0.55, 0.2, 0.3}
	idx := make([]int32, 2)
	copy(mp.correction.w, make([]float32, 6))
	c.chooseBiased(mp, w, st, idx)
	// Group sums 1.0, 1.15, 0.5: groups 1 and 0; top 2 of {0.9, 0.1, 0.6, 0.55}.
	if !slices.Equal(idx, []int32{0, 2}) {
		t.Errorf("unbiased choice %v, want [0 2]", idx)
	}
	copy(mp.correction.w, []float32{0, 0, 0, 0, 0.5, 0.1})
	c.chooseBiased(mp, w, st, idx)
	// Biased group sums 1.0, 1.15, 1.1: groups 1 and 2; top 2 of {0.6, 0.55, 0.7, 0.4}.
	if !slices.Equal(idx, []int32{4, 2}) {
		t.Errorf("biased choice %v, want [4 2]", idx)
	}

	// The gates are the unbiased scores: a forward with a bias that flips the choice
	// routes differently, and its gates are scores (renormalised, times routed_scale).
	b := randBatch(rand.New(rand.NewPCG(7, 8)), cfg.Vocab, 2, 5)
	st0, err := m.Forward(b, StepOptions{Assignments: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range mp.correction.w {
		mp.correction.w[i] = 0
	}
	mp.correction.w[5] = 10 // expert 5 is every token's first choice
	st1, err := m.Forward(b, StepOptions{Assignments: true})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(st0.Assignments[0], st1.Assignments[0]) {
		t.Error("the selection bias changed no assignment")
	}
	lw := c.ws.layers[1].moe
	for tok := 0; tok < 10; tok++ {
		if lw.idx[tok*2] != 5 {
			t.Fatalf("token %d's first choice is %d, not the biased expert 5", tok, lw.idx[tok*2])
		}
		s := lw.s[tok*6 : (tok+1)*6]
		e0, e1 := lw.idx[tok*2], lw.idx[tok*2+1]
		want := s[e0] / (s[e0] + s[e1]) * 2.5
		if got := lw.gate[tok*2]; math.Abs(float64(got-want)) > 1e-6 {
			t.Fatalf("token %d: gate %g, want the unbiased score's %g", tok, got, want)
		}
	}

	// The update: below the mean up, above it down, at the mean unchanged.
	copy(mp.correction.w, []float32{0, 0, 0, 0, 0, 0})
	other := c.layers[2].moe.correction.w
	copy(other, []float32{1, 1, 1, 1, 1, 1})
	if err := m.UpdateRouterBias([][]int{{3, 3, 3, 3, 3, 3}, {0, 6, 2, 4, 3, 3}}); err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 0, 0, 0, 0, 0}; !slices.Equal(mp.correction.w, want) {
		t.Errorf("balanced layer: bias %v, want %v", mp.correction.w, want)
	}
	if want := []float32{1.01, 0.99, 1.01, 0.99, 1, 1}; !slices.Equal(other, want) {
		t.Errorf("bias after the update %v, want %v", other, want)
	}
	if err := m.UpdateRouterBias([][]int{{1, 2}}); err == nil {
		t.Error("loads of the wrong shape were accepted")
	}
	// Its gradient stays zero: AdamW leaves it where the update puts it.
	m.ZeroGrad()
	if _, err := m.ForwardBackward(b, StepOptions{Train: true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Params() {
		if p.ID.Role.String() == "router_correction" && slices.ContainsFunc(p.G, func(g float32) bool { return g != 0 }) {
			t.Errorf("%s has a gradient %v", p.Name, p.G)
		}
	}
}

// TestMLADecodesQuantised: a compressed checkpoint's quantised kv_b_proj decodes from the
// latent cache, the absorbed products reading its dequantised values: the logits are those
// of the float32 model holding the dequantised weights.
func TestMLADecodesQuantised(t *testing.T) {
	cfg := mlaCases()["full_rank_query_window"]()
	m, ref := randomised(t, cfg, 13), randomised(t, cfg, 13)
	qs := map[string]*quant.Matrix{}
	for i, p := range m.Params() {
		if strings.HasSuffix(p.Name, "kv_b_proj.weight") {
			q, err := quant.Quantize(p.W, p.Shape[0], p.Shape[1], 8, 0)
			if err != nil {
				t.Fatal(err)
			}
			qs[p.Name] = q
			copy(ref.Params()[i].W, q.Dequantize())
		}
	}
	if err := m.SetQuantized(qs); err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 6
	b := randBatch(rand.New(rand.NewPCG(1, 2)), cfg.Vocab, B, T)
	want, err := ref.Logits(b, StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if worst := decodeGap(t, m.NewDecoder(B, T), b, want, int(cfg.PaddedVocab())); worst > 1e-4 {
		t.Errorf("decoder logits differ from the dequantised model's by %g", worst)
	}
}
