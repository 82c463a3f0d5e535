package nn

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/moec-dev/moec/compiler/program"
)

func TestNewRefusesUnsupported(t *testing.T) {
	cases := map[string]func(m *program.Model){
		"encoder-decoder":  func(m *program.Model) { m.Encoder = 2 },
		"latent attention": func(m *program.Model) { m.Attention.MLA, m.Attention.KVLoraRank = true, 16 }, // no v_head_dim
		"latent attention (MLA) with qk_norm": func(m *program.Model) {
			a := &m.Attention
			a.MLA, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim, a.Sinks = true, 4, 2, 2, 2, true
		},
		"relative position":      func(m *program.Model) { m.Position = program.Relative },
		"multi-token prediction": func(m *program.Model) { m.MTPDepth = 1 },
	}
	for feature, mod := range cases {
		m := tinyMoE()
		mod(m)
		_, err := New(m, 1)
		var ue *UnsupportedError
		if !errors.As(err, &ue) {
			t.Errorf("%s: New returned %v, want *UnsupportedError", feature, err)
			continue
		}
		if !strings.Contains(ue.Feature, feature) {
			t.Errorf("%s: error names %q", feature, ue.Feature)
		}
	}
}

func TestNewRejectsInconsistentSizes(t *testing.T) {
	cases := map[string]func(m *program.Model){
		"kv_heads":   func(m *program.Model) { m.Attention.KVHeads = 3 },
		"even":       func(m *program.Model) { m.Attention.HeadDim = 3 },
		"top_k":      func(m *program.Model) { m.MoE.TopK = 9 },
		"activation": func(m *program.Model) { m.MoE.Activation = "tanh" },
		"positive":   func(m *program.Model) { m.DModel = 0 },
	}
	for want, mod := range cases {
		m := tinyMoE()
		mod(m)
		_, err := New(m, 1)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: New returned %v", want, err)
		}
	}
}

func TestParamsNamesAndSharing(t *testing.T) {
	cfg := tinyMoE()
	cfg.MoE.Router, cfg.MoE.RouterDim, cfg.MoE.SharedExperts = program.RouteTokenEmbedding, 5, 1
	cfg.MoE.Every, cfg.TieEmbeddings = 2, true
	m, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range m.Params() {
		names = append(names, p.Name)
		n := 1
		for _, s := range p.Shape {
			n *= s
		}
		if len(p.W) != n || len(p.G) != n {
			t.Errorf("%s: shape %v but %d weights, %d grads", p.Name, p.Shape, len(p.W), len(p.G))
		}
	}
	for _, want := range []string{
		"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
		"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
		"model.layers.1.block_sparse_moe.gate.weight", "model.router_embed.weight",
		"model.layers.1.block_sparse_moe.experts.3.w1.weight", "model.layers.1.block_sparse_moe.experts.3.w2.weight",
		"model.layers.1.block_sparse_moe.experts.3.w3.weight", "model.layers.1.block_sparse_moe.shared_experts.0.w1.weight",
		"model.norm.weight",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("missing parameter %s", want)
		}
	}
	if slices.Contains(names, "lm_head.weight") {
		t.Error("a tied head is listed as its own parameter")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("parameter %s listed twice", n)
		}
		seen[n] = true
	}
	// Experts view one contiguous buffer: consecutive experts' w1 are adjacent in memory.
	var w1 [][]float32
	for _, p := range m.Params() {
		if strings.HasSuffix(p.Name, ".w1.weight") && strings.Contains(p.Name, ".experts.") {
			w1 = append(w1, p.W)
		}
	}
	end := func(x []float32) uintptr { return uintptr(unsafe.Pointer(&x[len(x)-1])) + 4 }
	if len(w1) != 4 || end(w1[0]) != uintptr(unsafe.Pointer(&w1[1][0])) {
		t.Error("expert w1 weights are not slices of one contiguous buffer")
	}
}

func TestInitDeterministicAndScaled(t *testing.T) {
	a, _ := New(tinyMoE(), 42)
	b, _ := New(tinyMoE(), 42)
	c, _ := New(tinyMoE(), 43)
	same, diff := true, false
	for i, p := range a.Params() {
		if !slices.Equal(p.W, b.Params()[i].W) {
			same = false
		}
		if !slices.Equal(p.W, c.Params()[i].W) {
			diff = true
		}
	}
	if !same || !diff {
		t.Errorf("same seed equal: %v, different seed differs: %v", same, diff)
	}
	emb := a.Params()[0].W
	var ss float64
	for _, v := range emb {
		ss += float64(v) * float64(v)
	}
	if std := ss / float64(len(emb)); std < 0.01*0.01 || std > 0.03*0.03 {
		t.Errorf("embedding variance %g, want about 0.02²", std)
	}
}

func TestBatchErrors(t *testing.T) {
	m, _ := New(tinyDense(), 1)
	for name, b := range map[string]Batch{
		"short":      {B: 2, T: 3, Tokens: make([]int32, 7)},
		"vocabulary": {B: 1, T: 2, Tokens: []int32{1, 2, 13}},
		"negative":   {B: 1, T: 2, Tokens: []int32{1, -2, 3}},
		"empty":      {B: 0, T: 2},
	} {
		if _, err := m.ForwardBackward(b, StepOptions{Train: true}); err == nil {
			t.Errorf("%s batch accepted", name)
		}
	}
}

// Training must learn: a few plain SGD steps on a repeated batch lower the loss.
func TestSGDLowersLoss(t *testing.T) {
	cfg := tinyMoE()
	m, _ := New(cfg, 1)
	b := randBatch(rand.New(rand.NewPCG(1, 1)), cfg.Vocab, 4, 6)
	var first, last float64
	for step := range 30 {
		m.ZeroGrad()
		st, err := m.ForwardBackward(b, StepOptions{Step: int64(step), Train: true})
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = st.Loss
		}
		last = st.Loss
		for _, p := range m.Params() {
			for i := range p.W {
				p.W[i] -= 0.5 * p.G[i]
			}
		}
	}
	if last > first-0.5 {
		t.Errorf("loss %.4f -> %.4f after 30 SGD steps", first, last)
	}
}

// Sharing dice depend only on (seed, step, layer): same key, same dice; layer 0 recomputes.
func TestShareDice(t *testing.T) {
	a := shareDice(0.5, 64, 1, 2, true)
	if !slices.Equal(a, shareDice(0.5, 64, 1, 2, true)) {
		t.Error("dice differ for the same key")
	}
	if slices.Equal(a, shareDice(0.5, 64, 1, 3, true)) {
		t.Error("dice identical across steps")
	}
	if !a[0] {
		t.Error("layer 0 did not recompute")
	}
	n := 0
	for _, r := range a {
		if r {
			n++
		}
	}
	if n < 20 || n > 44 {
		t.Errorf("%d of 64 layers recompute at p = 0.5", n)
	}
	for _, r := range shareDice(0.5, 8, 1, 2, false) {
		if !r {
			t.Error("a layer shared with sharing off")
		}
	}
}

// Two identical steps give bit-identical gradients: no reduction depends on scheduling.
func TestForwardBackwardDeterministic(t *testing.T) {
	cfg := tinyMoE()
	cfg.Attention.TalkingHeads, cfg.Attention.ShareWeights = true, 0.5
	cfg.Layers = 3
	m, _ := New(cfg, 4)
	b := randBatch(rand.New(rand.NewPCG(2, 3)), cfg.Vocab, 5, 6)
	var grads [2][][]float32
	var stats [2]Stats
	for run := range 2 {
		m.ZeroGrad()
		st, err := m.ForwardBackward(b, StepOptions{Seed: 1, Step: 9, Train: true})
		if err != nil {
			t.Fatal(err)
		}
		stats[run] = st
		for _, p := range m.Params() {
			grads[run] = append(grads[run], append([]float32(nil), p.G...))
		}
	}
	if stats[0].Loss != stats[1].Loss {
		t.Errorf("losses differ: %v vs %v", stats[0].Loss, stats[1].Loss)
	}
	for i, p := range m.Params() {
		if !slices.Equal(grads[0][i], grads[1][i]) {
			t.Errorf("%s: gradients differ between identical steps", p.Name)
		}
	}
	// Forward alone gives the same loss and does not touch gradients.
	m.ZeroGrad()
	st, err := m.Forward(b, StepOptions{Seed: 1, Step: 9, Train: true})
	if err != nil || st.Loss != stats[0].Loss {
		t.Errorf("Forward loss %v (%v), ForwardBackward %v", st.Loss, err, stats[0].Loss)
	}
	for _, p := range m.Params() {
		for _, g := range p.G {
			if g != 0 {
				t.Fatalf("Forward wrote a gradient into %s", p.Name)
			}
		}
	}
	if len(st.ExpertTokens) != 3 || st.Tokens != 30 {
		t.Errorf("stats: %d MoE layers of expert counts, %d tokens", len(st.ExpertTokens), st.Tokens)
	}
	kept := 0
	for _, layer := range st.ExpertTokens {
		for _, n := range layer {
			kept += n
		}
	}
	if kept+st.Dropped != 3*30*2 {
		t.Errorf("kept %d + dropped %d assignments, want %d", kept, st.Dropped, 3*30*2)
	}
}

// With node-limited routing every token's experts lie in its top_k_groups best groups, and
// its best expert overall is always among them (its group scores at least as high).
func TestGroupRouting(t *testing.T) {
	cfg := tinyMoE()
	cfg.MoE.Experts, cfg.MoE.TopK, cfg.MoE.Groups, cfg.MoE.TopKGroups = 8, 2, 4, 1
	c, err := newCore[float64](cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	b := randBatch(rand.New(rand.NewPCG(4, 4)), cfg.Vocab, 3, 6)
	if _, _, err := c.forward(b, StepOptions{}); err != nil {
		t.Fatal(err)
	}
	w := c.ws.layers[0].moe
	for tok := 0; tok < 18; tok++ {
		e0, e1 := w.idx[tok*2], w.idx[tok*2+1]
		if e0/2 != e1/2 {
			t.Fatalf("token %d routed to experts %d and %d in different groups", tok, e0, e1)
		}
		s := w.s[tok*8 : tok*8+8]
		if best := slices.Index(s, slices.Max(s)); int32(best) != e0 {
			t.Errorf("token %d: first choice %d, best expert %d", tok, e0, best)
		}
	}
	cfg.MoE.TopKGroups = 5
	if _, err := New(cfg, 1); err == nil {
		t.Error("top_k_groups > groups accepted")
	}
}

// TestNormEpsDefault: a Go-built model that leaves norm_eps at 0 computes with
// program.DefaultNormEps, the value a .moe file gets when it writes none, so the same
// model means the same numbers however it was built. A far larger epsilon changes the
// loss, so the comparison sees the epsilon at all.
func TestNormEpsDefault(t *testing.T) {
	b := randBatch(rand.New(rand.NewPCG(4, 5)), tinyDense().Vocab, 3, 6)
	loss := func(eps float64) float64 {
		cfg := tinyMoE()
		cfg.NormEps = eps
		m, err := New(cfg, 7)
		if err != nil {
			t.Fatal(err)
		}
		st, err := m.Forward(b, StepOptions{Seed: 1, Step: 1})
		if err != nil {
			t.Fatal(err)
		}
		return st.Loss
	}
	unset, def := loss(0), loss(program.DefaultNormEps)
	if unset != def {
		t.Errorf("norm_eps unset: loss %.9f, with the default %g: %.9f", unset, program.DefaultNormEps, def)
	}
	if big := loss(1e-1); big == def {
		t.Errorf("norm_eps 0.1 gives the default's loss %.9f: the epsilon does not reach the norms", big)
	}
}
