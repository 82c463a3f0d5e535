package nn

import (
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/weights"
)

// TestInitialMatchesNew holds runtime/weights' initialisation, which knows a tensor's start
// from its identity alone, to New's bit for bit, on models that take every naming branch
// (every role, biases, norms of each placement, talking heads, tied and untied heads).
func TestInitialMatchesNew(t *testing.T) {
	cases := map[string]func(m *program.Model){
		"moe": func(*program.Model) {},
		"everything": func(m *program.Model) {
			m.Layers = 4
			m.Attention.TalkingHeads, m.Attention.ShareKV, m.Attention.QKNorm, m.Attention.Sinks = true, 2, true, true
			m.Attention.BiasQKV, m.Attention.BiasOut, m.FFN.Bias = true, true, true
			m.MoE.Router, m.MoE.RouterDim, m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.Every = program.RouteTokenEmbedding, 5, 2, 3, 2
			m.MoE.RouterBias, m.MoE.ExpertBias, m.MoE.ParallelDense, m.MoE.SharedGate = true, true, true, true
		},
		"sandwich-layernorm-learned-relu": func(m *program.Model) {
			m.NormPlacement, m.Norm, m.Position = program.SandwichNorm, program.LayerNorm, program.Learned
			m.MoE.Activation, m.FFN.Activation = program.ReLU, program.GELU
		},
		"post-tied": func(m *program.Model) {
			m.NormPlacement, m.TieEmbeddings, m.FinalNorm, m.VocabPadTo = program.PostNorm, true, false, 8
		},
	}
	for name, mod := range cases {
		cfg := tinyMoE()
		mod(cfg)
		m, err := New(cfg, 7)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := weights.Initial(cfg, 7)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ps := m.Params()
		if len(got) != len(ps) {
			t.Fatalf("%s: weights.Initial has %d tensors, New %d", name, len(got), len(ps))
		}
		for i, p := range ps {
			if got[i].ID != p.ID || got[i].Name != p.Name || !slices.Equal(got[i].W, p.W) {
				t.Errorf("%s: tensor %d (%s): weights.Initial differs from New", name, i, p.Name)
			}
		}
	}
}
