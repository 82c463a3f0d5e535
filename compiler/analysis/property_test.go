package analysis

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// randomModel draws a model from the space of every feature the counter knows, sizes kept
// small. The same seed gives the same model.
func randomModel(r *rand.Rand) *program.Model {
	pick := func(n int) int { return r.IntN(n) }
	heads := []int{1, 2, 4, 8}[pick(4)]
	// A literal on purpose: the space drawn from includes models the checker refuses (0 layers).
	m := &program.Model{
		Vocab: int64(1 + pick(500)), VocabPadTo: int64([]int{1, 8, 64}[pick(3)]),
		DModel: int64(8 * (1 + pick(8))), Layers: pick(6), Encoder: []int{0, 0, 2}[pick(3)], SeqLen: int64(1 + pick(300)),
		Norm:          []program.Norm{program.RMSNorm, program.LayerNorm}[pick(2)],
		NormPlacement: []program.NormPlacement{program.PreNorm, program.PostNorm, program.SandwichNorm}[pick(3)],
		FinalNorm:     pick(2) == 0,
		Position:      []program.Position{program.Rotary, program.Learned, program.NoPosition, program.Relative}[pick(4)],
		TieEmbeddings: pick(2) == 0, MTPDepth: pick(2),
		Attention: program.Attention{
			Heads: heads, KVHeads: []int{heads, 1, max(heads/2, 1)}[pick(3)], HeadDim: int64([]int{0, 4, 16}[pick(3)]),
			QKNorm: pick(2) == 0, TalkingHeads: pick(2) == 0, ShareWeights: []float64{1, 0.5, 0.25}[pick(3)],
			ShareKV: 1 + pick(3), Sinks: pick(2) == 0, Window: int64(pick(2) * pick(64)),
			BiasQKV: pick(2) == 0, BiasOut: pick(2) == 0, QKNormFull: pick(2) == 0,
		},
		FFN: program.FFN{Hidden: int64(4 * (1 + pick(32))),
			Activation: []program.Activation{program.ReLU, program.GELU, program.SiLU, program.SwiGLU, program.GeGLU}[pick(5)],
			Bias:       pick(2) == 0},
	}
	if pick(3) == 0 {
		m.Attention.KVLoraRank = int64(4 + pick(16))
		m.Attention.QLoraRank = int64(pick(2) * (4 + pick(16)))
		m.Attention.QKNopeHeadDim, m.Attention.QKRopeHeadDim, m.Attention.VHeadDim = int64(2+pick(8)), int64(2+pick(4)), int64(2+pick(8))
	}
	if pick(3) > 0 {
		e := 1 + pick(16)
		m.MoE = &program.MoE{
			Experts: e, TopK: 1 + pick(e), ExpertHidden: int64(pick(2) * 4 * (1 + pick(16))), ExpertBias: pick(2) == 0,
			SharedExperts: pick(3), Every: 1 + pick(3), FirstDense: pick(2), ParallelDense: pick(4) == 0, EncoderMoE: pick(2) == 0,
			Router:    []program.RouterInput{program.RouteHidden, program.RouteTokenEmbedding}[pick(2)],
			RouterDim: int64(pick(2) * 8), RouterBias: pick(2) == 0, AuxFreeBias: float64(pick(2)) * 0.001,
			SharedGate: pick(2) == 0,
		}
		m.MoE.ParallelAttention = m.MoE.ParallelDense && pick(2) == 0
		if pick(4) == 0 {
			m.MoE.Layers = []int{0, 2}
		}
	}
	return m
}

func TestPropertiesRandomModels(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		m := randomModel(r)
		c := Count(m)
		if c.TotalAll != c.Total.Sum() || c.ActiveAll != c.Active.Sum() {
			t.Fatalf("model %d: totals disagree with component sums: %+v", i, m)
		}
		if c.ActiveAll > c.TotalAll || c.ActiveAll < 0 {
			t.Fatalf("model %d: active %d, total %d", i, c.ActiveAll, c.TotalAll)
		}
		var layers int64
		for _, l := range c.Layers {
			layers += l.Total
		}
		tables := c.Total.Embedding + c.Total.Position + c.Total.Head + c.Total.RouterEmbedding
		finalNorms := c.TotalAll - tables - layers
		var want int64
		if m.FinalNorm {
			want = resolve(m).stacks() * resolve(m).normParams(m.DModel)
		}
		if finalNorms != want {
			t.Fatalf("model %d: total - tables - layers = %d, want the final norms %d", i, finalNorms, want)
		}
		if len(c.Layers) != m.Layers+m.Encoder || c.EncoderCount != m.Encoder {
			t.Fatalf("model %d: %d layers (%d encoder)", i, len(c.Layers), c.EncoderCount)
		}
		f := CountFLOPs(m, 0)
		if f.ForwardPerToken < 0 || f.TrainPerToken != 3*(f.ForwardPerToken+f.MTPPerToken) ||
			f.RouterPerToken > f.MatmulPerToken || f.HeadPerToken > f.MatmulPerToken {
			t.Fatalf("model %d: inconsistent FLOPs %+v", i, f)
		}
		// Parameters never depend on settings that only change the math at run time.
		m2 := *m
		m2.Attention.ShareWeights, m2.Attention.Window, m2.RopeBase, m2.NormEps = 1, 0, 12345, 1e-3
		if m2.Position != program.Learned {
			m2.SeqLen *= 2
		}
		if Count(&m2).TotalAll != c.TotalAll {
			t.Fatalf("model %d: parameters changed with share_weights/window/rope_base/norm_eps/seq_len", i)
		}
	}
}

func TestPropertiesGrowth(t *testing.T) {
	// Along a curriculum the total grows with the experts and the active count stays put once
	// top_k experts exist (the dense stage differs only by the router and its table).
	m := moeBase()
	m.MoE.TopK = 1
	prev := int64(0)
	var active int64
	prevE := 0
	for _, e := range []int{2, 4, 8, 16, 64} {
		sm := program.StageModel(m, &program.Stage{Experts: e})
		c := Count(sm)
		if c.TotalAll <= prev {
			t.Errorf("%d experts: total %d did not grow from %d", e, c.TotalAll, prev)
		}
		// Only the routers widen: E×d per MoE layer, two MoE layers.
		if want := 2 * int64(e-prevE) * bD; active != 0 && c.ActiveAll-active != want {
			t.Errorf("%d experts: active grew by %d, want %d (router only)", e, c.ActiveAll-active, want)
		}
		prev, active, prevE = c.TotalAll, c.ActiveAll, e
	}
}

func FuzzCount(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		m := randomModel(rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
		c := Count(m)
		if c.ActiveAll > c.TotalAll {
			t.Fatalf("active %d > total %d", c.ActiveAll, c.TotalAll)
		}
		_ = CountFLOPs(m, int64(seed%4096))
	})
}

// TestQKNormScaleOnly holds that the q/k norms add the same parameters whatever the model's
// norm: they are RMSNorm scales with no bias (OLMoE, Qwen3), which is what the runtime
// builds (runtime/nn: q_norm.weight and k_norm.weight only), so a LayerNorm model must not
// count a bias for them.
func TestQKNormScaleOnly(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		m := randomModel(r)
		qkNormAdds := func(norm program.Norm) int64 {
			with, without := *m, *m
			with.Norm, without.Norm = norm, norm
			with.Attention.QKNorm, without.Attention.QKNorm = true, false
			return Count(&with).TotalAll - Count(&without).TotalAll
		}
		rms, ln := qkNormAdds(program.RMSNorm), qkNormAdds(program.LayerNorm)
		if rms != ln {
			t.Fatalf("model %d: q/k norms add %d parameters under rmsnorm, %d under layernorm: %+v", i, rms, ln, m)
		}
		if m.Layers > 0 && rms <= 0 {
			t.Fatalf("model %d: q/k norms add %d parameters to %d layers", i, rms, m.Layers)
		}
	}
}
