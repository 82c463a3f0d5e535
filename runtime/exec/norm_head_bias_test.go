package exec

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// runtime/nn refuses LayerNorms without biases and an output-head bias, so these tests
// hold the step program to the model runtime/nn computes the same: LayerNorms whose biases
// are zero, and no head bias where the head's bias is zero; a head bias that is not zero
// adds itself to the logits (decoding), its gradient holds to central differences of the
// loss, and every layout computes what one rank does.

// biasLayouts are the layouts held to one rank.
func biasLayouts() []step.Layout {
	return []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull},
	}
}

// biasModel is featuretest's Base with the balance and z-losses on and edit applied.
func biasModel(edit func(m *program.Model)) *program.Model {
	m := featuretest.Base()
	m.Name = "bias_variant"
	m.MoE.BalanceLoss, m.MoE.ZLoss = 0.01, 0.001
	edit(m)
	return m
}

// weightsOf is net's weights by parameter.
func weightsOf(net *nn.Model) map[params.ID][]float32 {
	out := map[params.ID][]float32{}
	for _, p := range net.Params() {
		out[p.ID] = p.W
	}
	return out
}

// oneRankLike runs m's one-rank step program on tokens from whole and holds its loss terms
// and every gradient it has to net's (whose weights whole holds, and any it has beside).
func oneRankLike(t *testing.T, m *program.Model, net *nn.Model, whole map[params.ID][]float32, skip func(params.ID) bool) {
	t.Helper()
	const B, T = 2, 8
	toks := randomTokens(B, T, int(m.Vocab), 41)
	net.ZeroGrad()
	want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 5, Train: true})
	if err != nil {
		t.Fatal(err)
	}
	b := step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}
	progs, err := step.Lower(m, b, oneRank())
	if err != nil {
		t.Fatal(err)
	}
	got := runWeights(t, m, whole, progs, b, [][]int32{toks}, Options{Seed: 5})
	for _, c := range []struct {
		what      string
		got, want float64
	}{{"CE", got.ce, want.CE}, {"balance", got.balance, want.Balance}, {"z-loss", got.zloss, want.ZLoss}} {
		if math.Abs(c.got-c.want) > 1e-5*math.Max(1, math.Abs(c.want)) {
			t.Errorf("%s %.9g, nn %.9g", c.what, c.got, c.want)
		}
	}
	for _, p := range net.Params() {
		if skip(p.ID) {
			continue
		}
		g, ok := got.grads[p.ID]
		if !ok {
			t.Errorf("the step program has no gradient of %s", p.Name)
			continue
		}
		if e := relErr(g, p.G); e > 1e-5 {
			t.Errorf("gradient of %s differs by %.3g (relative)", p.Name, e)
		}
	}
}

// layoutsLikeOneRank holds m under biasLayouts to one rank, from whole.
func layoutsLikeOneRank(t *testing.T, m *program.Model, whole map[params.ID][]float32) {
	t.Helper()
	const mb, T, M = 2, 8, 2
	for _, l := range biasLayouts() {
		micro := make([][]int32, l.DP*M)
		for i := range micro {
			micro[i] = randomTokens(mb, T, int(m.Vocab), int64(300+i))
		}
		o := Options{Seed: 9, Step: 1}
		lower := func(l step.Layout, b step.Batch) []*step.Program {
			progs, err := step.Lower(m, b, l)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return progs
		}
		refB, b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
		ref := runWeights(t, m, whole, lower(oneRank(), refB), refB, micro, o)
		got := runWeights(t, m, whole, lower(l, b), b, micro, o)
		if math.Abs(got.ce-ref.ce) > 1e-5*math.Max(1, math.Abs(ref.ce)) {
			t.Errorf("%s: CE %.9g, one rank %.9g", l, got.ce, ref.ce)
		}
		worst, worstID := 0.0, params.ID{}
		for id, want := range ref.grads {
			if e := relErr(got.grads[id], want); e > worst {
				worst, worstID = e, id
			}
		}
		if worst > 1e-5 {
			t.Errorf("%s: gradient of %s differs from one rank's by %.3g (relative)", l, worstID, worst)
		}
	}
}

// inferLayouts are the inference layouts held to one rank.
func inferLayouts() []step.Layout {
	return []step.Layout{oneRank(), {DP: 1, EP: 1, TP: 2, PP: 1}, {DP: 2, EP: 2, TP: 1, PP: 1}, {DP: 1, EP: 1, TP: 1, PP: 2}}
}

// TestNormWithoutBias: LayerNorms without biases (norm_bias = false) compute what
// runtime/nn computes with zero biases, in training (one rank and every layout) and in
// the prefill and decoding programs, under each norm placement.
func TestNormWithoutBias(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m *program.Model)
	}{
		{"pre-norm", func(*program.Model) {}},
		{"post_norm", func(m *program.Model) { m.NormPlacement = program.PostNorm }},
		{"sandwich_norm, dense layers", func(m *program.Model) { m.NormPlacement, m.MoE.Every = program.SandwichNorm, 2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := biasModel(func(m *program.Model) { m.Norm, m.NormNoBias = program.LayerNorm, true; c.edit(m) })
			biased := *m
			biased.NormNoBias = false
			net := variantNet(t, &biased)
			normBias := func(id params.ID) bool { return id.Bias && id.Role.Norm() }
			for _, p := range net.Params() {
				if normBias(p.ID) {
					clear(p.W)
				}
			}
			whole := weightsOf(net)
			oneRankLike(t, m, net, whole, normBias)
			layoutsLikeOneRank(t, m, whole)
			toks := sequences(2, 8, int(m.Vocab), 78)
			want := handLogits(t, net, toks)
			for _, l := range inferLayouts() {
				if w := worstDiff(inferLogits(t, m, net, toks, []int{3, 5}, l), want); w > 1e-5 {
					t.Errorf("%s: logits differ from runtime/nn's by %.3g", l, w)
				}
			}
		})
	}
}

// TestHeadBias: an output-head bias (head_bias), with the head's own weights and tied to
// the embedding: at zero it changes nothing runtime/nn computes; at random values its
// gradient is the loss's central differences, every layout computes what one rank does,
// and the prefill and decoding logits are runtime/nn's plus the bias.
func TestHeadBias(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m *program.Model)
	}{
		{"head", func(*program.Model) {}},
		{"tied embeddings", func(m *program.Model) { m.TieEmbeddings = true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := biasModel(func(m *program.Model) { m.HeadBias = true; c.edit(m) })
			plain := *m
			plain.HeadBias = false
			net := variantNet(t, &plain)
			id := params.ID{Role: params.RoleHead, Layer: -1, Expert: -1, Bias: true}
			V := int(m.PaddedVocab())
			whole := weightsOf(net)
			whole[id] = make([]float32, V)
			oneRankLike(t, m, net, whole, func(params.ID) bool { return false })

			r := rand.New(rand.NewPCG(3, 4))
			bias := make([]float32, V)
			for i := range bias {
				bias[i] = float32(r.NormFloat64())
			}
			whole[id] = bias
			headBiasGradient(t, m, whole, id)
			layoutsLikeOneRank(t, m, whole)

			toks := sequences(2, 8, int(m.Vocab), 79)
			want := handLogits(t, net, toks)
			for i := range want {
				for _, row := range want[i] {
					for j := range row {
						row[j] += bias[j]
					}
				}
			}
			ts := append(tensorsOf(net), safetensors.Tensor{Name: "lm_head.bias", Shape: []int{V}, Data: bias})
			for _, l := range inferLayouts() {
				if m.TieEmbeddings && l.PP > 1 {
					continue // refused: tied embeddings under pipeline parallelism
				}
				if w := worstDiff(inferLogitsOf(t, m, ts, toks, []int{3, 5}, l), want); w > 1e-5 {
					t.Errorf("%s: logits differ from runtime/nn's plus the bias by %.3g", l, w)
				}
			}
		})
	}
}

// headBiasGradient holds the head bias's gradient (one rank) to central differences of
// the cross-entropy at the vocabulary entries the targets use and a few others.
func headBiasGradient(t *testing.T, m *program.Model, whole map[params.ID][]float32, id params.ID) {
	t.Helper()
	const B, T, h = 2, 8, 0.05
	toks := randomTokens(B, T, int(m.Vocab), 42)
	b := step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}
	progs, err := step.Lower(m, b, oneRank())
	if err != nil {
		t.Fatal(err)
	}
	run := func() layoutRun { return runWeights(t, m, whole, progs, b, [][]int32{toks}, Options{Seed: 5}) }
	grad := run().grads[id]
	bias := whole[id]
	entries := []int{0, 1, int(m.Vocab) - 1}
	for i := 0; i < B; i++ {
		entries = append(entries, int(toks[i*(T+1)+1]), int(toks[i*(T+1)+T]))
	}
	for _, j := range entries {
		v := bias[j]
		bias[j] = v + h
		up := run().ce
		bias[j] = v - h
		down := run().ce
		bias[j] = v
		num := (up - down) / (2 * h)
		if d := math.Abs(num - float64(grad[j])); d > 1e-3*math.Abs(num)+2e-5 {
			t.Errorf("head bias %d: gradient %.6g, central difference %.6g", j, grad[j], num)
		}
	}
	if t.Failed() {
		t.Logf("entries %v", entries)
	}
}
