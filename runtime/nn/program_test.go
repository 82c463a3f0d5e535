package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// runSchedule drives a Step through the whole schedule, as the generated program does.
func runSchedule(t *testing.T, m *Model, b Batch, o StepOptions) Stats {
	t.Helper()
	s, err := m.BeginStep(b, o)
	if err != nil {
		t.Fatal(err)
	}
	for l := 0; l < s.Layers(); l++ {
		if err := s.LayerForward(l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.HeadForward()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.HeadBackward(); err != nil {
		t.Fatal(err)
	}
	for l := s.Layers() - 1; l >= 0; l-- {
		if err := s.LayerBackward(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EmbedBackward(); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStepMatchesForwardBackward checks that the Schedule, driven one public call at a
// time, computes what ForwardBackward computes (the two share the layer functions; this
// guards the Schedule's own state: its phases, the Stats it carries between calls and the
// workspace it holds), on models that take every branch:
// sharing dice, cross-layer K/V, qk_norm, talking heads, sinks, sandwich and post norms,
// layernorm with learned positions, token-embedding routing, shared experts, a dense
// layer beside MoE layers and a tied head without a final norm. The two paths run the
// same operations in the same order, so the loss and every gradient must agree to the
// last bit; a tolerance would hide a schedule that drifted.
func TestStepMatchesForwardBackward(t *testing.T) {
	cases := map[string]func() *program.Model{
		"moe": tinyMoE,
		"sharing-talking-heads-kv": func() *program.Model {
			m := tinyMoE()
			m.Layers = 4
			m.Attention.ShareWeights, m.Attention.TalkingHeads, m.Attention.ShareKV = 0.5, true, 2
			m.Attention.QKNorm, m.Attention.Sinks = true, true
			m.MoE.Router, m.MoE.RouterDim, m.MoE.SharedExperts, m.MoE.Every = program.RouteTokenEmbedding, 5, 1, 2
			m.MoE.CapacityFactor = 1
			return m
		},
		"sandwich-layernorm-learned": func() *program.Model {
			m := tinyMoE()
			m.NormPlacement, m.Norm, m.Position = program.SandwichNorm, program.LayerNorm, program.Learned
			m.Attention.BiasQKV, m.Attention.BiasOut, m.FFN.Bias = true, true, true
			m.MoE.ParallelDense = true
			return m
		},
		"post-tied-dense": func() *program.Model {
			m := tinyDense()
			m.NormPlacement, m.TieEmbeddings, m.FinalNorm = program.PostNorm, true, false
			m.FFN.Activation = program.GELU
			return m
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			ref, err := New(cfg, 7)
			if err != nil {
				t.Fatal(err)
			}
			got, err := New(cfg, 7)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			for step := int64(0); step < 3; step++ {
				b := randBatch(r, cfg.Vocab, 2, 5)
				o := StepOptions{Seed: 11, Step: step, Train: true, Assignments: step == 1}
				ref.ZeroGrad()
				got.ZeroGrad()
				want, err := ref.ForwardBackward(b, o)
				if err != nil {
					t.Fatal(err)
				}
				st := runSchedule(t, got, b, o)
				if st.Loss != want.Loss || st.CE != want.CE || st.Balance != want.Balance || st.ZLoss != want.ZLoss ||
					st.SharedLayers != want.SharedLayers || st.Dropped != want.Dropped {
					t.Fatalf("step %d: schedule stats %+v, ForwardBackward %+v", step, st, want)
				}
				if fmt.Sprint(st.ExpertTokens, st.Assignments) != fmt.Sprint(want.ExpertTokens, want.Assignments) {
					t.Fatalf("step %d: routing %v %v by the schedule, %v %v by ForwardBackward", step, st.ExpertTokens, st.Assignments, want.ExpertTokens, want.Assignments)
				}
				for i, p := range ref.Params() {
					q := got.Params()[i]
					for j := range p.G {
						if math.Float32bits(p.G[j]) != math.Float32bits(q.G[j]) {
							t.Fatalf("step %d: %s.G[%d] = %v by the schedule, %v by ForwardBackward", step, p.Name, j, q.G[j], p.G[j])
						}
					}
					// Move both models the same way so later steps see other weights.
					for j := range p.W {
						p.W[j] -= 0.5 * p.G[j]
						q.W[j] -= 0.5 * q.G[j]
					}
				}
			}
		})
	}
}

func TestStepRefusesOutOfTurn(t *testing.T) {
	cfg := tinyMoE()
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := randBatch(rand.New(rand.NewPCG(3, 4)), cfg.Vocab, 1, 4)
	s, err := m.BeginStep(b, StepOptions{Train: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LayerForward(1); err == nil || !strings.Contains(err.Error(), "LayerForward(0)") {
		t.Errorf("LayerForward(1) first: %v", err)
	}
	if _, err := s.HeadForward(); err == nil {
		t.Error("HeadForward before the layers: no error")
	}
	if err := s.HeadBackward(); err == nil {
		t.Error("HeadBackward before HeadForward: no error")
	}
	for l := 0; l < s.Layers(); l++ {
		if err := s.LayerForward(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.LayerForward(s.Layers()); err == nil || !strings.Contains(err.Error(), "HeadForward") {
		t.Errorf("LayerForward past the last layer: %v", err)
	}
	if _, err := s.HeadForward(); err != nil {
		t.Fatal(err)
	}
	if err := s.HeadBackward(); err != nil {
		t.Fatal(err)
	}
	if err := s.LayerBackward(0); err == nil || !strings.Contains(err.Error(), "LayerBackward(1)") {
		t.Errorf("LayerBackward(0) before layer 1: %v", err)
	}
	if err := s.EmbedBackward(); err == nil {
		t.Error("EmbedBackward before the layers: no error")
	}
	if _, err := m.BeginStep(Batch{B: 1, T: 4, Tokens: []int32{1, 2}}, StepOptions{}); err == nil {
		t.Error("BeginStep accepted a short batch")
	}
}

func TestLayoutMatchesNew(t *testing.T) {
	cases := map[string]func(m *program.Model){
		"moe": func(*program.Model) {},
		"everything": func(m *program.Model) {
			m.Layers = 4
			m.Attention.TalkingHeads, m.Attention.ShareKV, m.Attention.QKNorm, m.Attention.Sinks = true, 2, true, true
			m.Attention.BiasQKV, m.Attention.BiasOut, m.FFN.Bias = true, true, true
			m.MoE.Router, m.MoE.RouterDim, m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.Every = program.RouteTokenEmbedding, 5, 2, 3, 2
			m.MoE.RouterBias, m.MoE.ExpertBias, m.MoE.ParallelDense = true, true, true
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
		m, err := New(cfg, 1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lay, err := ParamList(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ps := m.Params()
		if len(lay) != len(ps) {
			t.Errorf("%s: Layout has %d parameters, New %d", name, len(lay), len(ps))
		}
		for i := range min(len(lay), len(ps)) {
			if lay[i].Name != ps[i].Name || !slices.Equal(lay[i].Shape, ps[i].Shape) {
				t.Errorf("%s: parameter %d: Layout %s %v, New %s %v", name, i, lay[i].Name, lay[i].Shape, ps[i].Name, ps[i].Shape)
				break
			}
		}
	}
	if _, err := ParamList(programtest.Model(t, "x", "vocab = 13; d_model = 8; layers = 2; encoder_layers = 1; seq_len = 6\nattention { heads = 2 }")); err == nil {
		t.Error("Layout accepted an encoder-decoder model")
	}
}
