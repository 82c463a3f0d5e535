package exec

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// The q/k norms (per head, Qwen3's; over the whole projections, OLMoE's; after rotary
// positions, HunYuan's), clipped projections (DBRX's) and cross-layer K/V sharing, alone and
// together, each a model nn computes (attnModel has 4 layers).
var qkShareVariants = []struct{ name, attention string }{
	{"qk_norm", "qk_norm = true"},
	{"qk_norm full", "qk_norm = full"},
	{"share_kv 2", "share_kv = 2"},
	{"share_kv 4", "share_kv = 4"},
	{"share_kv qk_norm", "share_kv = 2; qk_norm = true"},
	{"share_kv qk_norm full", "share_kv = 2; qk_norm = full"},
	{"qk_norm bias window sinks", "qk_norm = true; qkv_bias = true; window = 5; sinks = true"},
	{"share_kv talking heads", "share_kv = 2; talking_heads = true"},
	{"clip_qkv", "clip_qkv = 0.08"},
	{"clip_qkv qk_norm share_kv", "clip_qkv = 1; qk_norm = true; share_kv = 2"},
	{"clip_qkv qk_norm full", "clip_qkv = 1.2; qk_norm = full"},
	{"qk_norm_after_rope", "qk_norm = true; qk_norm_after_rope = true"},
	{"qk_norm_after_rope share_kv", hunyuanAttention},
	{"qk_norm_after_rope full share_kv clip_qkv", "qk_norm = full; qk_norm_after_rope = true; share_kv = 2; clip_qkv = 0.1"},
}

// hunyuanAttention is Hunyuan-Large's: q/k norms after rotary positions with cross-layer
// K/V sharing.
const hunyuanAttention = "qk_norm = true; qk_norm_after_rope = true; share_kv = 2"

// The tiny Qwen3-MoE and OLMoE of interop/hf's tinyModels.
const qkFamilies = `model tiny_qwen3_moe {
  vocab = 300; d_model = 32; layers = 4; seq_len = 16
  attention { heads = 4; kv_heads = 2; head_dim = 16; qk_norm = true }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 6; top_k = 2; expert_hidden = 24; every = 2; normalize = false; capacity_factor = dropless }
}
model tiny_olmoe {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm_eps = 1e-5
  attention { heads = 4; kv_heads = 2; qk_norm = full }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 6; top_k = 3; normalize = false; capacity_factor = dropless; balance_loss = 0.01; z_loss = 0.001 }
}
`

// TestQKNormAndSharedKVMatchHandWrittenModel: q/k norms per head and over the whole
// projections, before or after rotary positions, clipped projections and cross-layer K/V
// sharing, one at a time and together, train through the
// step program as runtime/nn does (losses and every gradient within 1e-5 for three
// steps), on one rank, under both recompute modes, tensor parallelism (with sequence
// parallelism), pipeline parallelism, and data × expert parallelism with ZeRO-3 against
// one rank.
func TestQKNormAndSharedKVMatchHandWrittenModel(t *testing.T) {
	one := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	for _, v := range qkShareVariants {
		t.Run(v.name, func(t *testing.T) { matchNN(t, attnModel(t, v.attention), one) })
	}
	for _, c := range []struct {
		name   string
		layout step.Layout
		full   bool // the layout also holds qk_norm = full
	}{
		{"recompute selective", step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeSelective}, true},
		{"recompute full", step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull}, true},
		{"tp2", step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, true},
		{"tp2 sp", step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}, true},
		{"pp2", step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, true},
		{"tp2 sp pp2 recompute full", step.Layout{DP: 1, EP: 1, TP: 2, PP: 2, SequenceParallel: true, Recompute: program.RecomputeFull}, true},
		{"dp2 ep2 zero3", step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}, true},
	} {
		attentions := []string{"share_kv = 2; qk_norm = true", hunyuanAttention + "; clip_qkv = 0.1"}
		if c.full {
			attentions = append(attentions, "share_kv = 2; qk_norm = full")
		}
		for _, attention := range attentions {
			t.Run(c.name+"/"+attention, func(t *testing.T) {
				m := attnModel(t, attention)
				if c.layout.DP > 1 {
					layoutMatchesOneRank(t, m, c.layout)
					return
				}
				matchNN(t, m, c.layout)
			})
		}
	}
}

// TestTinyQwen3AndOlmoeMatchHandWrittenModel trains interop/hf's tiny_qwen3_moe and
// tiny_olmoe as written through the step program against runtime/nn, on one rank, under
// tp 2 (Qwen3's per-head norms with sequence parallelism, OLMoE's whole-projection norms
// with and without) and pp 2.
func TestTinyQwen3AndOlmoeMatchHandWrittenModel(t *testing.T) {
	for _, c := range []struct {
		name    string
		layouts []step.Layout
	}{
		{"tiny_qwen3_moe", []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1}, {DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}, {DP: 1, EP: 1, TP: 1, PP: 2}}},
		{"tiny_olmoe", []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1}, {DP: 1, EP: 1, TP: 1, PP: 2, Recompute: program.RecomputeFull},
			{DP: 1, EP: 1, TP: 2, PP: 1}, {DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}}},
	} {
		for _, l := range c.layouts {
			t.Run(c.name+"/"+l.String(), func(t *testing.T) { matchNN(t, loadModel(t, qkFamilies, c.name), l) })
		}
	}
}

// TestQKNormRefusals: K/V sharing with attention-weight sharing, and a pipeline stage
// starting inside a K/V group, are refused with E0510's Unsupported, naming the feature.
func TestQKNormRefusals(t *testing.T) {
	b := step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
	for _, c := range []struct {
		attention string
		layout    step.Layout
		feature   string
	}{
		{"share_kv = 2; share_weights = 0.5", step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, "share_kv"},
		{"share_kv = 4", step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, "share_kv"},
	} {
		_, err := step.Lower(attnModel(t, c.attention), b, c.layout)
		var le *step.LayoutError
		if !errors.As(err, &le) || len(le.Unsupported) != 1 || !strings.Contains(le.Unsupported[0].Feature, c.feature) {
			t.Errorf("%s at %s: %v; want the step program to refuse %s", c.attention, c.layout, err, c.feature)
		}
	}
}

// TestQKNormAndSharedKVDecodeAsHandWritten: the prefill and decoding step programs of each
// variant give runtime/nn's Decoder's logits (within 1e-5 of the largest), one rank and
// under tp 2 (whole-projection norms too) and pp 2; tiny_qwen3_moe and tiny_olmoe too.
func TestQKNormAndSharedKVDecodeAsHandWritten(t *testing.T) {
	check := func(t *testing.T, m *program.Model, layouts ...step.Layout) {
		if w := decodeAlike(t, m, 1, 2, 12); w > 1e-5 {
			t.Errorf("decoding: logits differ by %.3g", w)
		}
		net, err := nn.New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		randomizeConstants(net)
		toks := sequences(2, 12, int(m.Vocab), 1)
		want := handLogits(t, net, toks)
		for _, l := range append([]step.Layout{oneRank()}, layouts...) {
			if w := worstDiff(inferLogits(t, m, net, toks, []int{5, 9}, l), want); w > 1e-5 {
				t.Errorf("prefill and decoding at %s: logits differ by %.3g", l, w)
			}
		}
	}
	tp2, pp2 := step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}
	for _, v := range qkShareVariants {
		t.Run(v.name, func(t *testing.T) {
			var layouts []step.Layout
			if !strings.Contains(v.attention, "talking") {
				layouts = append(layouts, tp2)
			}
			if !strings.Contains(v.attention, "share_kv = 4") {
				layouts = append(layouts, pp2)
			}
			check(t, attnModel(t, v.attention), layouts...)
		})
	}
	t.Run("tiny_qwen3_moe", func(t *testing.T) { check(t, loadModel(t, qkFamilies, "tiny_qwen3_moe"), tp2, pp2) })
	t.Run("tiny_olmoe", func(t *testing.T) { check(t, loadModel(t, qkFamilies, "tiny_olmoe"), tp2, pp2) })
}

// TestQKNormGradient checks qk_norm_bwd's input and scale gradients against central
// differences of L = Σ c ⊙ qk_norm(x; w), per head and over a whole projection, and that
// the accumulating form adds the same gradients to what is there.
func TestQKNormGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	kn := &Kernels{}
	kn.d.NormEps = 1e-5
	for _, width := range []int{8, 32} {
		const n = 64 * 4
		x, w, c := normals(r, n), normals(r, width), normals(r, n)
		y, rstd := make([]float32, n), make([]float32, n/width)
		loss := func() float64 {
			kn.QKNorm(x, w, y, rstd)
			return dotF(c, y)
		}
		loss()
		dx, dw := make([]float32, n), make([]float32, width)
		kn.QKNormBwd(c, x, w, rstd, dx, dw, false, false)
		if e := relErr(dx, numericGrad(x, 1e-2, loss)); e > 1e-3 {
			t.Errorf("width %d: the input's gradient differs from central differences by %.3g", width, e)
		}
		if e := relErr(dw, numericGrad(w, 1e-2, loss)); e > 1e-3 {
			t.Errorf("width %d: the scale's gradient differs from central differences by %.3g", width, e)
		}
		loss()
		accX, accW := append([]float32(nil), dx...), append([]float32(nil), dw...)
		kn.QKNormBwd(c, x, w, rstd, accX, accW, true, true)
		if e := relErr(accX, scaled(dx, 2)); e > 1e-6 {
			t.Errorf("width %d: the accumulated input gradient is not twice the gradient (%.3g)", width, e)
		}
		if e := relErr(accW, scaled(dw, 2)); e > 1e-6 {
			t.Errorf("width %d: the accumulated scale gradient is not twice the gradient (%.3g)", width, e)
		}
	}
}

func scaled(x []float32, s float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v * s
	}
	return out
}

// TestClipGradient checks clip_bwd against central differences of L = Σ c ⊙ clip(x), with
// a bound that cuts about a third of x, and that the accumulating form adds the gradient.
func TestClipGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	const n, limit = 512, 1
	x, c := normals(r, n), normals(r, n)
	for i, v := range x { // away from the bound, where the difference quotient is the slope
		if d := v*v - limit; d*d < 1e-3 {
			x[i] = 0.5
		}
	}
	y := make([]float32, n)
	loss := func() float64 {
		Clip(x, y, limit)
		return dotF(c, y)
	}
	dx := make([]float32, n)
	ClipBwd(c, x, dx, limit, false)
	if e := relErr(dx, numericGrad(x, 1e-3, loss)); e > 1e-3 {
		t.Errorf("clip_bwd differs from central differences by %.3g", e)
	}
	cut := 0
	for _, g := range dx {
		if g == 0 {
			cut++
		}
	}
	if cut < n/5 {
		t.Errorf("the bound cut %d of %d values; the check wants a third", cut, n)
	}
	acc := append([]float32(nil), dx...)
	ClipBwd(c, x, acc, limit, true)
	if e := relErr(acc, scaled(dx, 2)); e > 1e-6 {
		t.Errorf("the accumulated gradient is not twice the gradient (%.3g)", e)
	}
}
