package generate

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/train"
)

func tinyModel() *program.Model {
	return programtest.TinyMoE()
}

// saveModel writes a freshly initialised model as a checkpoint, the way train does.
func saveModel(t *testing.T) (string, *nn.Model) {
	t.Helper()
	m, err := nn.New(tinyModel(), 3)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := checkpoint.Writer{}.Save(t.TempDir(), &checkpoint.Checkpoint{
		Manifest: checkpoint.Manifest{Train: "tiny", Stage: "s", Step: 1, Final: true, Model: tinyModel(), Seed: 3},
		Model:    train.ParamTensors(m.Params()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestRun(t *testing.T) {
	dir, _ := saveModel(t)
	gen := func(opt Options) string {
		t.Helper()
		opt.Checkpoint = dir
		var b bytes.Buffer
		if err := Run(context.Background(), opt, &b); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	a := gen(Options{Prompt: "func main() {", MaxTokens: 100, Temperature: 0.8, TopK: 40, Seed: 1})
	if len(a) != 100 {
		t.Fatalf("generated %d bytes, want 100 (past seq_len 32, so the context was re-read)", len(a))
	}
	if b := gen(Options{Prompt: "func main() {", MaxTokens: 100, Temperature: 0.8, TopK: 40, Seed: 1}); b != a {
		t.Error("same seed, different text")
	}
	if b := gen(Options{Prompt: "func main() {", MaxTokens: 100, Temperature: 0.8, TopK: 40, Seed: 2}); b == a {
		t.Error("different seeds, same text")
	}
	g1 := gen(Options{Prompt: strings.Repeat("x", 80), MaxTokens: 20})
	g2 := gen(Options{Prompt: strings.Repeat("x", 80), MaxTokens: 20, Seed: 9})
	if g1 != g2 || len(g1) != 20 {
		t.Errorf("greedy decoding depends on the seed: %q vs %q", g1, g2)
	}
}

// TestGreedyMatchesForward checks the first greedy token against a full forward pass of
// the same prompt (so Generate feeds the decoder the prompt it was given).
func TestGreedyMatchesForward(t *testing.T) {
	dir, m := saveModel(t)
	prompt := "package main\n"
	var b bytes.Buffer
	if err := Run(context.Background(), Options{Checkpoint: dir, Prompt: prompt, MaxTokens: 1}, &b); err != nil {
		t.Fatal(err)
	}
	toks := make([]int32, 0, len(prompt)+1)
	for _, c := range []byte(prompt) {
		toks = append(toks, int32(c))
	}
	toks = append(toks, 0) // the target of the last position; unused
	T := len(prompt)
	logits, err := m.Logits(nn.Batch{B: 1, T: T, Tokens: toks}, nn.StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	V := int(tinyModel().PaddedVocab())
	last := logits[(T-1)*V : T*V]
	best := 0
	for i := range 256 {
		if last[i] > last[best] {
			best = i
		}
	}
	if b.Bytes()[0] != byte(best) {
		t.Errorf("greedy token %d, forward argmax %d", b.Bytes()[0], best)
	}
}

func TestSample(t *testing.T) {
	logits := []float32{float32(math.Log(0.7)), float32(math.Log(0.2)), float32(math.Log(0.1)), -50}
	probs := make([]float64, 4)
	order := make([]int, 4)
	counts := make([]int, 4)
	const n = 20000
	for i := 0; i < n; i++ {
		counts[sample(logits, probs, order, Sampler{Temperature: 1, Seed: 5}, int64(i))]++
	}
	for i, want := range []float64{0.7, 0.2, 0.1, 0} {
		if got := float64(counts[i]) / n; math.Abs(got-want) > 0.015 {
			t.Errorf("token %d drawn %.3f of the time, want %.2f", i, got, want)
		}
	}
	for i := 0; i < 100; i++ {
		if tok := sample(logits, probs, order, Sampler{Temperature: 1, TopK: 1, Seed: 5}, int64(i)); tok != 0 {
			t.Fatalf("top-1 sampled %d", tok)
		}
		if tok := sample(logits, probs, order, Sampler{Temperature: 2, TopK: 2, Seed: 5}, int64(i)); tok > 1 {
			t.Fatalf("top-2 sampled %d", tok)
		}
	}
}

func TestErrors(t *testing.T) {
	dir, _ := saveModel(t)
	var b bytes.Buffer
	if err := Run(context.Background(), Options{Checkpoint: t.TempDir(), MaxTokens: 4}, &b); diag.CodeOf(err) != diag.CodeCorruptCheckpoint {
		t.Errorf("empty dir: %v", err)
	}
	// Every option out of range is refused by its flag's name, before anything is written;
	// in particular 0 tokens is not "the default".
	for _, c := range []struct {
		opt  Options
		flag string
	}{
		{Options{MaxTokens: 0}, "--max-tokens 0"},
		{Options{MaxTokens: -5}, "--max-tokens -5"},
		{Options{MaxTokens: 4, Temperature: -1}, "--temperature -1"},
		{Options{MaxTokens: 4, Temperature: math.NaN()}, "--temperature NaN"},
		{Options{MaxTokens: 4, Temperature: math.Inf(1)}, "--temperature +Inf"},
		{Options{MaxTokens: 4, TopK: -1}, "--top-k -1"},
	} {
		c.opt.Checkpoint, c.opt.Prompt, c.opt.EchoPrompt = dir, "hi", true
		b.Reset()
		err := Run(context.Background(), c.opt, &b)
		if diag.CodeOf(err) != diag.CodeBadRunOption || !strings.Contains(err.Error(), c.flag) || b.Len() != 0 {
			t.Errorf("%+v: %v, wrote %q; want E0611 naming %s and nothing written", c.opt, err, b.String(), c.flag)
		}
	}
	// A checkpoint that does not load is refused before the prompt is echoed.
	b.Reset()
	if err := Run(context.Background(), Options{Checkpoint: t.TempDir(), MaxTokens: 4, Prompt: "hi", EchoPrompt: true}, &b); err == nil || b.Len() != 0 {
		t.Errorf("bad checkpoint with EchoPrompt: %v, wrote %q", err, b.String())
	}
	b.Reset()
	if err := Run(context.Background(), Options{Checkpoint: dir, MaxTokens: 4, Prompt: "hi", EchoPrompt: true}, &b); err != nil || b.Len() != 6 || !strings.HasPrefix(b.String(), "hi") {
		t.Errorf("EchoPrompt: %v, wrote %q; want the prompt and 4 bytes", err, b.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, Options{Checkpoint: dir, MaxTokens: 4}, &b); err != context.Canceled {
		t.Errorf("cancelled: %v", err)
	}
}

// stepOnly hides a decoder's Prefill: the prompt is then read one Step per token.
type stepOnly struct{ Decoder }

// TestPrefillMatchesTokenByToken: Generate reads the prompt (and the context it reads again
// when the cache fills) in one batched Feed through nn.Decoder's Prefill; the text it
// samples equals the text of reading the same tokens one Step at a time, greedy and
// sampled, past seq_len.
func TestPrefillMatchesTokenByToken(t *testing.T) {
	_, m := saveModel(t)
	cfg := m.Config()
	if _, ok := any(m.NewDecoder(1, int(cfg.SeqLen))).(Prefiller); !ok {
		t.Fatal("nn.Decoder does not read a prompt at once")
	}
	for _, s := range []Sampler{{}, {Temperature: 0.9, TopK: 20, Seed: 4}} {
		gen := func(dec Decoder) string {
			var b bytes.Buffer
			err := GenerateWith(context.Background(), cfg, dec, []byte("func (d *Decoder) Feed("), 90, s,
				func(c byte) error { return b.WriteByte(c) })
			if err != nil {
				t.Fatal(err)
			}
			return b.String()
		}
		fed := gen(m.NewDecoder(1, int(cfg.SeqLen)))
		stepped := gen(stepOnly{m.NewDecoder(1, int(cfg.SeqLen))})
		if fed != stepped || len(fed) != 90 {
			t.Errorf("temperature %g: prefilled %q, token by token %q", s.Temperature, fed, stepped)
		}
	}
}
