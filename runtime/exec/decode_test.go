package exec

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/compiler/step/steptest"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// decodeAlike feeds the same tokens to the decoding step program and to runtime/nn's
// Decoder, position by position, and holds every step's logits together.
func decodeAlike(t *testing.T, m *program.Model, seed int64, batch, steps int) float64 {
	t.Helper()
	net, err := nn.New(m, seed)
	if err != nil {
		t.Fatalf("%s: %v", steptest.String(m), err)
	}
	prog, err := step.LowerDecode(m, batch, steps)
	if err != nil {
		t.Fatalf("%s: %v", steptest.String(m), err)
	}
	if err := step.Verify(prog); err != nil {
		t.Fatal(err)
	}
	ex, err := New(prog, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.LoadTensors(tensorsOf(net)); err != nil {
		t.Fatal(err)
	}
	dec := net.NewDecoder(batch, steps)
	toks := randomTokens(batch, steps, int(m.Vocab), seed)
	worst := 0.0
	for pos := 0; pos < steps; pos++ {
		in := make([]int32, batch)
		for i := range in {
			in[i] = toks[i*(steps+1)+pos]
		}
		want, err := dec.Step(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ex.Decode(in, pos)
		if err != nil {
			t.Fatalf("%s: %v", steptest.String(m), err)
		}
		var scale float64
		for _, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for j := range want {
			worst = math.Max(worst, math.Abs(float64(got[j]-want[j]))/math.Max(scale, 1e-6))
		}
	}
	return worst
}

// TestDecodeMatchesHandWritten decodes through the step program of one decoding step
// (step.LowerDecode) and through runtime/nn's Decoder: hunyuan_tiny's stages (talking
// heads, the token-embedding router, capacity ignored in decoding) and 60 random models,
// 2 sequences of 12 positions; every step's logits agree within 1e-5 of their largest.
func TestDecodeMatchesHandWritten(t *testing.T) {
	for _, experts := range []int{1, 8} {
		if w := decodeAlike(t, hunyuanTiny(t, experts), 1, 2, 12); w > 1e-5 {
			t.Errorf("hunyuan_tiny with %d experts: logits differ by %.3g", experts, w)
		}
	}
	// The decoding rotary tables (grown position by position) carry the scaling.
	for _, rs := range []*program.RopeScaling{
		{Type: program.RopeLlama3, Factor: 8, OriginalSeqLen: 4, LowFreqFactor: 1, HighFreqFactor: 4},
		{Type: program.RopeYarn, Factor: 4, OriginalSeqLen: 3, BetaFast: 32, BetaSlow: 1},
	} {
		m := hunyuanTiny(t, 8)
		m.RopeScaling = rs
		if w := decodeAlike(t, m, 1, 2, 12); w > 1e-5 {
			t.Errorf("hunyuan_tiny with %s rope scaling: logits differ by %.3g", rs.Type, w)
		}
	}
	r := rand.New(rand.NewPCG(9, 9))
	worst := 0.0
	for i := 0; i < 60; i++ {
		m := steptest.Model(r, "rnd")
		w := decodeAlike(t, m, int64(i), 2, 8)
		if w > 1e-5 {
			t.Fatalf("%s: logits differ by %.3g", steptest.String(m), w)
		}
		worst = math.Max(worst, w)
	}
	t.Logf("60 random models decode alike; worst logit difference %.2g of the largest", worst)
}

// inferLogits decodes sequences of total tokens through a LocalDecoder at layout l:
// sequence i's first lengths[i] tokens by one prefill, then one token per step for every
// sequence together (sequence i at position lengths[i]+k) while the longest has room.
// It returns each sequence's logits at each position it was fed (nil where not fed).
func inferLogits(t *testing.T, m *program.Model, net *nn.Model, toks [][]int32, lengths []int, l step.Layout) [][][]float32 {
	t.Helper()
	return inferLogitsOf(t, m, tensorsOf(net), toks, lengths, l)
}

// inferLogitsOf is inferLogits from named tensors.
func inferLogitsOf(t *testing.T, m *program.Model, ts []safetensors.Tensor, toks [][]int32, lengths []int, l step.Layout) [][][]float32 {
	t.Helper()
	total := len(toks[0])
	ld, err := NewLocalDecoder(m, len(lengths)/l.DP, total, l, time.Minute)
	if err != nil {
		t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
	}
	if err := ld.Load(ts); err != nil {
		t.Fatal(err)
	}
	V := int(m.PaddedVocab())
	out := make([][][]float32, len(lengths))
	keep := func(i, pos int, logits []float32) {
		if out[i] == nil {
			out[i] = make([][]float32, total)
		}
		out[i][pos] = append([]float32(nil), logits[i*V:(i+1)*V]...)
	}
	prompts := make([][]int32, len(lengths))
	longest := 0
	for i, n := range lengths {
		prompts[i] = toks[i][:n]
		longest = max(longest, n)
	}
	logits, err := ld.Prefill(prompts)
	if err != nil {
		t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
	}
	for i, n := range lengths {
		keep(i, n-1, logits)
	}
	for k := 0; longest+k < total; k++ {
		in, pos := make([]int32, len(lengths)), make([]int, len(lengths))
		for i, n := range lengths {
			pos[i] = n + k
			in[i] = toks[i][pos[i]]
		}
		logits, err := ld.Decode(in, pos)
		if err != nil {
			t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
		}
		for i := range lengths {
			keep(i, pos[i], logits)
		}
	}
	return out
}

// handLogits is each sequence's logits at every position from runtime/nn's Decoder fed
// one token at a time.
func handLogits(t *testing.T, net *nn.Model, toks [][]int32) [][][]float32 {
	t.Helper()
	out := make([][][]float32, len(toks))
	for i, seq := range toks {
		dec := net.NewDecoder(1, len(seq))
		for _, tok := range seq {
			logits, err := dec.Step([]int32{tok})
			if err != nil {
				t.Fatal(err)
			}
			out[i] = append(out[i], append([]float32(nil), logits...))
		}
	}
	return out
}

// worstDiff is the largest difference of got's logits from want's, relative to want's
// largest logit at that position, over the positions got has.
func worstDiff(got, want [][][]float32) float64 {
	worst := 0.0
	for i := range got {
		for pos, g := range got[i] {
			if g == nil {
				continue
			}
			w := want[i][pos]
			var scale float64
			for _, v := range w {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for j := range w {
				worst = math.Max(worst, math.Abs(float64(g[j]-w[j]))/math.Max(scale, 1e-6))
			}
		}
	}
	return worst
}

func sequences(n, total, vocab int, seed int64) [][]int32 {
	flat := randomTokens(n, total, vocab, seed)
	out := make([][]int32, n)
	for i := range out {
		out[i] = flat[i*(total+1) : i*(total+1)+total]
	}
	return out
}

// oneRank is the single-rank layout.
func oneRank() step.Layout { return step.Layout{DP: 1, EP: 1, TP: 1, PP: 1} }

// TestPrefillMatchesHandWritten prefills prompts of different lengths in one batch
// (padded at the end) through the prefill program (step.LowerPrefill), then decodes
// through the decoding step's program with each sequence at its own position: the
// prefill's last-position logits and every decoding step's agree within 1e-5 of their
// largest with runtime/nn's Decoder fed one token at a time, for hunyuan_tiny's stages
// and 60 random models.
func TestPrefillMatchesHandWritten(t *testing.T) {
	for _, experts := range []int{1, 8} {
		m := hunyuanTiny(t, experts)
		net, err := nn.New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		toks := sequences(2, 12, int(m.Vocab), 1)
		if w := worstDiff(inferLogits(t, m, net, toks, []int{5, 9}, oneRank()), handLogits(t, net, toks)); w > 1e-5 {
			t.Errorf("hunyuan_tiny with %d experts: logits differ by %.3g", experts, w)
		}
	}
	r := rand.New(rand.NewPCG(11, 11))
	worst := 0.0
	for i := 0; i < 60; i++ {
		m := steptest.Model(r, "rnd")
		net, err := nn.New(m, int64(i))
		if err != nil {
			t.Fatal(err)
		}
		toks := sequences(3, 8, int(m.Vocab), int64(i))
		w := worstDiff(inferLogits(t, m, net, toks, []int{1 + i%4, 4, 6}, oneRank()), handLogits(t, net, toks))
		if w > 1e-5 {
			t.Fatalf("%s: logits differ by %.3g", steptest.String(m), w)
		}
		worst = math.Max(worst, w)
	}
	t.Logf("60 random models prefill and decode alike; worst logit difference %.2g of the largest", worst)
}

// TestInferenceLayoutsMatchOneRank prefills and decodes random models, and hunyuan_tiny's
// MoE stage, under tensor parallelism (heads, KV caches, FFN and expert widths and the
// vocabulary split, logits gathered), expert parallelism (each replica its own
// sequences, the routed tokens exchanged) and both: every logit agrees within 1e-5 with
// one rank's. Layouts a model does not divide are skipped (and counted).
func TestInferenceLayoutsMatchOneRank(t *testing.T) {
	layouts := []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 2, EP: 2, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 1, EP: 1, TP: 2, PP: 2},
		{DP: 2, EP: 2, TP: 1, PP: 2},
	}
	ran := make([]int, len(layouts))
	run := func(m *program.Model, seed int64) {
		net, err := nn.New(m, seed)
		if err != nil {
			t.Fatal(err)
		}
		toks := sequences(2, 8, int(m.Vocab), seed)
		lengths := []int{3, 5}
		one := inferLogits(t, m, net, toks, lengths, oneRank())
		for li, l := range layouts {
			if _, err := step.LowerInference(m, step.Inference{Batch: 1, MaxLen: 8}, l); err != nil {
				var le *step.LayoutError
				if !errors.As(err, &le) {
					t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
				}
				continue
			}
			if w := worstDiff(inferLogits(t, m, net, toks, lengths, l), one); w > 1e-5 {
				t.Fatalf("%s at %s: logits differ from one rank's by %.3g", steptest.String(m), l, w)
			}
			ran[li]++
		}
	}
	run(hunyuanTiny(t, 8), 1) // ep 2, pp 2 and ep 2 × pp 2: talking heads are not lowered under tp
	if ran[1] != 1 || ran[3] != 1 || ran[5] != 1 {
		t.Error("hunyuan_tiny's MoE stage did not decode at ep 2, pp 2 and ep 2 × pp 2 (its router table on both stages)")
	}
	r := rand.New(rand.NewPCG(13, 13))
	for i := 0; i < 60; i++ {
		run(steptest.Model(r, "rnd"), int64(i))
	}
	for li, l := range layouts {
		if ran[li] < 5 {
			t.Errorf("only %d models decoded at %s", ran[li], l)
		}
	}
	t.Logf("models that decode as one rank does, of hunyuan_tiny and 60 random ones: tp 2 %d, ep 2 %d, tp 2 × ep 2 %d, pp 2 %d, tp 2 × pp 2 %d, ep 2 × pp 2 %d",
		ran[0], ran[1], ran[2], ran[3], ran[4], ran[5])
}

// TestInferenceLayoutRefused: a layout that does not divide the model is a layout error
// that step.Diagnose turns into E0509, and a feature not lowered under tp into E0510.
func TestInferenceLayoutRefused(t *testing.T) {
	m := hunyuanTiny(t, 8)
	for _, c := range []struct {
		l    step.Layout
		code string
	}{
		{step.Layout{DP: 1, EP: 1, TP: 3, PP: 1}, "E0509"},
		{step.Layout{DP: 3, EP: 3, TP: 1, PP: 1}, "E0509"},
		{step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, "E0510"}, // talking heads under tp
	} {
		_, err := NewLocalDecoder(m, 1, 8, c.l, time.Minute)
		if err == nil {
			t.Fatalf("%s: no error", c.l)
		}
		ds := step.Diagnose(err, nil, c.l.String())
		if len(ds) == 0 || string(ds[0].Code) != c.code {
			t.Errorf("%s: %v, want %s", c.l, ds, c.code)
		}
	}
}

// TestPrefillCacheIsRead drops one layer's kv_write from the prefill program: the
// decoding steps after it read that layer's cache, so their logits leave runtime/nn's
// (the mutation TestPrefillMatchesHandWritten would catch).
func TestPrefillCacheIsRead(t *testing.T) {
	m := hunyuanTiny(t, 8)
	net, err := nn.New(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	const total, prompt = 12, 6
	dec, err := step.LowerDecode(m, 1, total)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := step.LowerPrefill(m, 1, prompt, total)
	if err != nil {
		t.Fatal(err)
	}
	dropped := false
	for i, op := range pre.Ops {
		if op.Kind == step.OpKVWrite && op.Layer == 1 {
			pre.Ops = append(pre.Ops[:i:i], pre.Ops[i+1:]...)
			dropped = true
			break
		}
	}
	if !dropped {
		t.Fatal("the prefill program writes no cache of layer 1")
	}
	base, err := New(dec, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := base.LoadTensors(tensorsOf(net)); err != nil {
		t.Fatal(err)
	}
	ex, err := NewSharing(pre, m, nil, base)
	if err != nil {
		t.Fatal(err)
	}
	toks := sequences(1, total, int(m.Vocab), 1)
	want := handLogits(t, net, toks)
	got := [][][]float32{make([][]float32, total)}
	logits, err := ex.Prefill([][]int32{toks[0][:prompt]})
	if err != nil {
		t.Fatal(err)
	}
	got[0][prompt-1] = append([]float32(nil), logits...)
	if w := worstDiff(got, want); w > 1e-5 {
		t.Fatalf("the prefill's own logits differ by %.3g: it does not read its cache", w)
	}
	for pos := prompt; pos < total; pos++ {
		logits, err := base.Decode([]int32{toks[0][pos]}, pos)
		if err != nil {
			t.Fatal(err)
		}
		got[0][pos] = append([]float32(nil), logits...)
	}
	if w := worstDiff(got, want); w < 1e-3 {
		t.Errorf("without layer 1's cache the decoding steps still agree (%.3g)", w)
	}
}
