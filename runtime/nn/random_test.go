package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// Random small models, including inconsistent ones: New either refuses with an error or
// returns a model whose step, gradients and decoder run without panicking and stay finite.
func TestRandomModelsNeverPanic(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	pick := func(n int) int { return r.IntN(n) }
	acts := []program.Activation{program.ReLU, program.GELU, program.SiLU, program.SwiGLU, program.GeGLU, "tanh"}
	built := 0
	for i := 0; i < 150; i++ {
		m := tinyDense()
		m.Layers = 1 + pick(4)
		m.Vocab, m.VocabPadTo = int64(5+pick(20)), int64(1+pick(8))
		m.Norm = []program.Norm{program.RMSNorm, program.LayerNorm}[pick(2)]
		m.NormPlacement = []program.NormPlacement{program.PreNorm, program.PostNorm, program.SandwichNorm}[pick(3)]
		m.FinalNorm, m.TieEmbeddings = pick(2) == 0, pick(2) == 0
		m.Position = []program.Position{program.Rotary, program.Learned, program.NoPosition, program.Relative}[pick(4)]
		m.MaxPosition = int64([]int{0, 4, 9}[pick(3)]) // 0: seq_len
		a := &m.Attention
		a.Heads = []int{1, 2, 4}[pick(3)]
		a.KVHeads = []int{1, 2, 4, 3}[pick(4)]
		a.HeadDim = int64([]int{2, 3, 4}[pick(3)])
		a.QKNorm, a.TalkingHeads, a.Sinks = pick(2) == 0, pick(2) == 0, pick(2) == 0
		a.ShareWeights = []float64{1, 0.5, 0.2}[pick(3)]
		a.ShareKV = 1 + pick(3)
		a.Window = int64(pick(4))
		a.BiasQKV, a.BiasOut = pick(2) == 0, pick(2) == 0
		m.FFN = program.FFN{Hidden: int64(pick(9)), Activation: acts[pick(len(acts))], Bias: pick(2) == 0}
		if pick(3) > 0 {
			m.MoE = &program.MoE{Experts: 1 + pick(6), TopK: 1 + pick(3), ExpertHidden: int64(pick(6)),
				Activation: acts[pick(len(acts))], SharedExperts: pick(2), Every: 1 + pick(2),
				Router:    []program.RouterInput{program.RouteHidden, program.RouteTokenEmbedding}[pick(2)],
				RouterDim: int64(pick(5)), Score: []program.Score{program.Softmax, program.Sigmoid}[pick(2)],
				Normalize: pick(2) == 0, CapacityFactor: []float64{0, 0.5, 1.25}[pick(3)],
				BalanceLoss: 0.01, ZLoss: 0.001, ParallelDense: pick(4) == 0, ExpertBias: pick(3) == 0}
			if pick(3) == 0 {
				m.MoE.Groups, m.MoE.TopKGroups = 1+pick(3), 1+pick(2)
			}
		}
		model, err := New(m, int64(i))
		if err != nil {
			var ue *UnsupportedError
			if errors.As(err, &ue) && ue.Feature == "" {
				t.Errorf("config %d: unsupported feature without a name", i)
			}
			continue
		}
		built++
		b := randBatch(r, m.Vocab, 2, 4)
		st, err := model.ForwardBackward(b, StepOptions{Seed: int64(i), Step: 1, Train: true})
		if err != nil {
			t.Errorf("config %d: %v", i, err)
			continue
		}
		if math.IsNaN(st.Loss) {
			t.Errorf("config %d: loss NaN", i)
		}
		for _, p := range model.Params() {
			for _, g := range p.G {
				if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
					t.Fatalf("config %d: %s has a non-finite gradient", i, p.Name)
				}
			}
		}
		dec := model.NewDecoder(2, 4)
		for pos := 0; pos < 4; pos++ {
			if _, err := dec.Step([]int32{0, 1}); err != nil {
				t.Errorf("config %d: decoder: %v", i, err)
			}
		}
	}
	if built < 10 {
		t.Errorf("only %d of 150 random configs were buildable; the test exercises too little", built)
	}
	t.Logf("%d of 150 random configs built and ran", built)
}
