package exec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// moeVariant is featuretest's Base (an MoE model of four experts, top 2, every layer)
// changed to use the MoE variants of a public family.
type moeVariant struct {
	name string
	edit func(m *program.Model)
}

func moeVariants() []moeVariant {
	llama4 := func(m *program.Model) { // tiny_llama4's MoE side
		e := m.MoE
		e.TopK, e.SharedExperts, e.SharedHidden, e.Score, e.Normalize, e.GateInput, e.Every = 1, 1, 8, program.Sigmoid, false, true, 2
	}
	gptOss := func(m *program.Model) { // tiny_gpt_oss's MoE side
		e := m.MoE
		e.RouterBias, e.ExpertBias, e.SwigluLimit, e.SwigluAlpha = true, true, 0.5, 1.702
	}
	return []moeVariant{
		{"routed_scale", func(m *program.Model) { m.MoE.RoutedScale = 2.5 }},
		{"routed_scale, sigmoid, unnormalised", func(m *program.Model) {
			m.MoE.RoutedScale, m.MoE.Score, m.MoE.Normalize = 2.5, program.Sigmoid, false
		}},
		{"shared_gate", func(m *program.Model) { m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 1, 8, true }},
		{"shared_gate over two shared experts", func(m *program.Model) {
			m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 2, 8, true
		}},
		{"gate_input", func(m *program.Model) { m.MoE.GateInput = true }},
		{"gate_input with a capacity factor", func(m *program.Model) { m.MoE.GateInput, m.MoE.CapacityFactor = true, 1 }},
		{"swiglu_limit", func(m *program.Model) { m.MoE.SwigluLimit, m.MoE.SwigluAlpha = 0.5, 1.702 }},
		{"parallel_dense", func(m *program.Model) { m.MoE.ParallelDense = true }},
		{"parallel_attention", func(m *program.Model) {
			m.MoE.ParallelDense, m.MoE.ParallelAttention, m.FFN.Hidden = true, true, m.DModel
		}},
		{"parallel_attention every 2, top 1", func(m *program.Model) {
			m.MoE.ParallelDense, m.MoE.ParallelAttention, m.MoE.Every, m.MoE.TopK = true, true, 2, 1
		}},
		{"llama4 MoE", llama4},
		{"gpt-oss MoE", gptOss},
		{"sparsemixer", func(m *program.Model) { m.MoE.SparsemixerEps, m.MoE.Normalize = 0.3, false }},
		{"phi-3.5-moe: sparsemixer, biased LayerNorms, attention and head", func(m *program.Model) { // tiny_phimoe's
			m.MoE.SparsemixerEps, m.MoE.Normalize, m.Norm, m.HeadBias = 0.1, false, program.LayerNorm, true
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
		}},
		{"deepseek-v3 MoE", func(m *program.Model) {
			e := m.MoE
			e.Score, e.RoutedScale, e.SharedExperts, e.SharedHidden = program.Sigmoid, 2.5, 1, 8
		}},
	}
}

// variantModel is Base with v's edits and the balance and z-losses on, so the router's
// backward carries every term.
func variantModel(t *testing.T, v moeVariant) *program.Model {
	t.Helper()
	m := featuretest.Base()
	m.Name = "moe_variant"
	m.MoE.BalanceLoss, m.MoE.ZLoss = 0.01, 0.001
	v.edit(m)
	return m
}

// variantNet builds m's hand-written model with every value moved off its initialisation
// by seeded noise: biases and norms that are not zero and one, pre-activations large
// enough that swiglu_limit's clamps cut some of them.
func variantNet(t *testing.T, m *program.Model) *nn.Model {
	t.Helper()
	net, err := nn.New(m, 13)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(13, 17))
	for _, p := range net.Params() {
		for i := range p.W {
			p.W[i] += float32(r.NormFloat64() * 0.3)
		}
	}
	return net
}

// TestMoEVariantsMatchHandWrittenModel: for each MoE variant (alone, and Llama 4's,
// gpt-oss's and DeepSeek-V3's MoE sides together) one step program step on one rank gives
// runtime/nn's loss terms and every gradient, over three steps of different tokens.
func TestMoEVariantsMatchHandWrittenModel(t *testing.T) {
	variantsMatchHandWrittenModel(t, moeVariants())
}

// variantsMatchHandWrittenModel holds each of vs's one-rank step programs to runtime/nn.
func variantsMatchHandWrittenModel(t *testing.T, vs []moeVariant) {
	const B, T = 2, 8
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			m := variantModel(t, v)
			net := variantNet(t, m)
			progs, err := step.Lower(m, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
			if err != nil {
				t.Fatal(err)
			}
			ex, err := New(progs[0], m, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range net.Params() {
				copy(ex.Param(p.ID), p.W)
			}
			for stepN := int64(0); stepN < 3; stepN++ {
				toks := randomTokens(B, T, int(m.Vocab), 40+stepN)
				net.ZeroGrad()
				want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 5, Step: stepN, Train: true})
				if err != nil {
					t.Fatal(err)
				}
				got, err := ex.Run([][]int32{toks}, Options{Seed: 5, Step: stepN})
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range []struct {
					what      string
					got, want float64
				}{{"loss", got.Loss, want.Loss}, {"CE", got.CE, want.CE}, {"balance", got.Balance, want.Balance}, {"z-loss", got.ZLoss, want.ZLoss}} {
					if math.Abs(c.got-c.want) > 1e-5*math.Max(1, math.Abs(c.want)) {
						t.Errorf("step %d: %s %.9g, nn %.9g", stepN, c.what, c.got, c.want)
					}
				}
				if got.Dropped != want.Dropped {
					t.Errorf("step %d: dropped %d, nn %d", stepN, got.Dropped, want.Dropped)
				}
				worst, worstName := 0.0, ""
				for _, p := range net.Params() {
					if e := relErr(ex.Grad(p.ID), p.G); e > worst {
						worst, worstName = e, p.Name
					}
				}
				if worst > 1e-5 {
					t.Errorf("step %d: gradient of %s differs by %.3g (relative)", stepN, worstName, worst)
				}
			}
		})
	}
}

// TestMoEVariantsUnderLayouts: each MoE variant computes under expert, tensor (with and
// without sequence parallelism) and pipeline parallelism, ZeRO, recomputation and the
// unified cache, what one
// rank computes on the same micro-batches: the loss terms and every reduced gradient.
func TestMoEVariantsUnderLayouts(t *testing.T) {
	variantsUnderLayouts(t, moeVariants())
}

// variantsUnderLayouts holds each of vs under the layouts below to one rank.
func variantsUnderLayouts(t *testing.T, vs []moeVariant) {
	layouts := []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 2, EP: 2, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull},
		{DP: 1, EP: 1, TP: 2, PP: 1, Recompute: program.RecomputeSelective},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3, Cache: step.Cache{Page: 4096}}, // the budget: the smallest that runs
	}
	const mb, T, M = 2, 8, 2
	for _, v := range vs {
		for _, l := range layouts {
			t.Run(fmt.Sprintf("%s/%s", v.name, l), func(t *testing.T) {
				m := variantModel(t, v)
				net := variantNet(t, m)
				micro := make([][]int32, l.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), int64(200+i))
				}
				o := Options{Seed: 9, Step: 1}
				b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
				if l.Cache.Page > 0 {
					l.Cache.Budget = smallestBudget(t, m, b, l, l.Cache.Page)
				}
				ref := runLayout(t, m, net, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M}, micro, o)
				got := runLayout(t, m, net, l, b, micro, o)
				for _, x := range []struct {
					what      string
					got, want float64
				}{{"CE", got.ce, ref.ce}, {"balance", got.balance, ref.balance}, {"z-loss", got.zloss, ref.zloss}} {
					if math.Abs(x.got-x.want) > 1e-5*math.Max(1, math.Abs(x.want)) {
						t.Errorf("%s %.9g, one rank %.9g", x.what, x.got, x.want)
					}
				}
				worst, worstID := 0.0, params.ID{}
				for id, want := range ref.grads {
					if e := relErr(got.grads[id], want); e > worst {
						worst, worstID = e, id
					}
				}
				if worst > 1e-5 {
					t.Errorf("gradient of %s differs from one rank's by %.3g (relative)", worstID, worst)
				}
			})
		}
	}
}

// TestMoEVariantsInfer: each MoE variant's prefill and decoding programs give
// runtime/nn's Decoder's logits (prompts of 3 and 5 tokens, then decoding to 8
// positions), on one rank and under tensor, expert and pipeline parallelism, within 1e-5
// of each position's largest logit.
func TestMoEVariantsInfer(t *testing.T) {
	variantsInfer(t, moeVariants())
}

// variantsInfer holds each of vs's prefill and decoding to runtime/nn's Decoder.
func variantsInfer(t *testing.T, vs []moeVariant) {
	layouts := []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 2, EP: 2, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 1, PP: 2},
	}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			m := variantModel(t, v)
			net := variantNet(t, m)
			toks := sequences(2, 8, int(m.Vocab), 77)
			lengths := []int{3, 5}
			one := inferLogits(t, m, net, toks, lengths, oneRank())
			if w := worstDiff(one, handLogits(t, net, toks)); w > 1e-5 {
				t.Fatalf("one rank's logits differ from runtime/nn's by %.3g", w)
			}
			for _, l := range layouts {
				if w := worstDiff(inferLogits(t, m, net, toks, lengths, l), one); w > 1e-5 {
					t.Errorf("%s: logits differ from one rank's by %.3g", l, w)
				}
			}
		})
	}
}
