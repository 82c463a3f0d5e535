package gpu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
)

// argmax is the greedy token of each sequence's row of logits (the first of equal ones),
// among the vocab first ids.
func argmax(logits []float32, rows, vocab int) []int32 {
	out := make([]int32, rows)
	width := len(logits) / rows
	for r := range out {
		row := logits[r*width : r*width+vocab]
		for j, v := range row {
			if v > row[out[r]] {
				out[r] = int32(j)
			}
		}
	}
	return out
}

// matchDecoding decodes two sequences of m (prompts of 3 and 2 tokens, then steps greedy
// tokens each) through the generated CUDA decoding under the emulation and through
// runtime/exec's prefill and decoding programs from the same weights, and holds the
// logits of the prefill and of every step together (1e-4 relative) and the greedy tokens
// equal.
func matchDecoding(t *testing.T, m *program.Model, steps int) {
	t.Helper()
	needClang(t)
	in := step.Inference{Batch: 2, Prompt: 3, MaxLen: 8}
	prefill, err := step.LowerPrefill(m, in.Batch, in.Prompt, in.MaxLen)
	if err != nil {
		t.Fatal(err)
	}
	decode, err := step.LowerDecode(m, in.Batch, in.MaxLen)
	if err != nil {
		t.Fatal(err)
	}
	net, err := nn.New(m, 11)
	if err != nil {
		t.Fatal(err)
	}
	whole := map[params.ID][]float32{}
	shapes := map[params.ID][]int{}
	for _, w := range net.Params() {
		whole[w.ID], shapes[w.ID] = w.W, w.Shape
	}
	dex, err := moexec.New(decode, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dex.LoadParams(func(id params.ID) ([]float32, []int) { return whole[id], shapes[id] }); err != nil {
		t.Fatal(err)
	}
	pex, err := moexec.NewSharing(prefill, m, nil, dex)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dec, err := OpenDecoder(context.Background(), m, in, Options{Mode: Emulated, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	t.Logf("generated and compiled in %v", time.Since(start))
	if err := dec.LoadParams(func(id params.ID) []float32 { return whole[id] }); err != nil {
		t.Fatal(err)
	}
	d, _ := m.Dims()
	prompts := [][]int32{{1, 5, 9}, {7, 2}}
	want, err := pex.Prefill(prompts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dec.Prefill(prompts)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(got, want); !(e <= 1e-4) {
		t.Fatalf("prefill: logits differ from the executor's by %.3g relative", e)
	}
	pos := []int{len(prompts[0]), len(prompts[1])}
	for s := 0; s < steps; s++ {
		tokens := argmax(want, in.Batch, d.V)
		if g := argmax(got, in.Batch, d.V); g[0] != tokens[0] || g[1] != tokens[1] {
			t.Fatalf("step %d: greedy tokens %v, the executor's %v", s, g, tokens)
		}
		if want, err = dex.DecodeAt(tokens, pos); err != nil {
			t.Fatal(err)
		}
		if got, err = dec.Decode(tokens, pos); err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, want); !(e <= 1e-4) {
			t.Fatalf("decoding step %d (positions %v): logits differ from the executor's by %.3g relative", s, pos, e)
		}
		t.Logf("step %d: tokens %v at %v, logits within %.2g", s, tokens, pos, relErr(got, want))
		pos[0]++
		pos[1]++
	}
}

// TestDecodingMatchesExecutorMoE: an MoE model (a dense layer, then four experts behind a
// token-embedding router, dropless; two query heads over one key/value head) decodes
// under the emulated CUDA decoding as runtime/exec decodes it.
func TestDecodingMatchesExecutorMoE(t *testing.T) {
	matchDecoding(t, programtest.TinyMoE(func(m *program.Model) { m.Attention.KVHeads = 1 }), 4)
}

// TestDecodingMatchesExecutorDense: the same for a dense model (another compile of the
// emulated decoding: on request).
func TestDecodingMatchesExecutorDense(t *testing.T) {
	longtest.Require(t, "another compile of the emulated decoding; make test stays under ten minutes")
	matchDecoding(t, programtest.Tiny(), 4)
}

// TestDecoderRefuses: inputs out of range are errors before anything runs.
func TestDecoderRefuses(t *testing.T) {
	dec := &Decoder{batch: 2, prompt: 3, maxLen: 8, vocab: 13, tokens: make([]int32, 6), at: make([]int32, 2)}
	for _, c := range []struct {
		run  func() error
		want string
	}{
		{func() error { _, err := dec.Prefill([][]int32{{1}}); return err }, "1 prompts for a prefill of 2"},
		{func() error { _, err := dec.Prefill([][]int32{{1, 2, 3, 4}, {1}}); return err }, "the prefill takes 1 to 3"},
		{func() error { _, err := dec.Prefill([][]int32{{1}, {13}}); return err }, "outside the vocabulary"},
		{func() error { _, err := dec.Decode([]int32{1, 2}, []int{0, 8}); return err }, "outside the cache of 8"},
		{func() error { _, err := dec.Decode([]int32{1}, []int{0}); return err }, "for 2 sequences"},
	} {
		if err := c.run(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error naming %q", err, c.want)
		}
	}
}

// TestDecodingMatchesExecutorHunyuanTiny: examples/hunyuan_tiny.moe's eight-expert stage
// (talking heads, so decode_attention_mixed in the decoding steps and the head-mixing
// kernels in the prefill; the token-embedding router; every second layer MoE) decodes
// under the emulated CUDA decoding as runtime/exec decodes it, which holds to runtime/nn's
// decoder (runtime/exec's TestDecodeMatchesHandWritten).
func TestDecodingMatchesExecutorHunyuanTiny(t *testing.T) {
	m, _ := hunyuanTiny(t, 8)
	matchDecoding(t, m, 3)
}
