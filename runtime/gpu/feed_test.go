package gpu

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestFeederMatchesHandWritten: continuous batching through the generated CUDA feeding
// programs under the emulation computes what runtime/nn's decoder computes reading the
// same tokens one step at a time, for an MoE model with talking heads (so
// decode_attention_mixed) and sinks, two query heads over one key/value head, and for a
// DeepSeek-V2-Lite-shaped one (latent attention with a low-rank query, a shared expert:
// kernels_mla.cu). Three sequences: sequence 0 reads its prompt in chunks of 3, sequence 1
// decodes a token a call from the start, sequence 2 waits two calls and reads chunks of 4,
// then each decodes until its cache is full, and a finished slot is reused for a new
// sequence from position 0. Every fed sequence's logits within 1e-4 (relative to the
// largest), and greedy tokens equal.
func TestFeederMatchesHandWritten(t *testing.T) {
	needClang(t)
	for name, m := range map[string]*program.Model{
		"talking heads sinks gqa": programtest.TinyMoE(func(m *program.Model) {
			m.Attention.KVHeads = 1
			m.Attention.TalkingHeads = true
			m.Attention.Sinks = true
		}),
		"latent attention": programtest.TinyMoE(func(m *program.Model) {
			a := &m.Attention
			a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 12, 16, 8, 4, 10
			m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 16
		}),
	} {
		t.Run(name, func(t *testing.T) { feederMatchesHandWritten(t, m) })
	}
}

// feederMatchesHandWritten runs TestFeederMatchesHandWritten's schedule on m.
func feederMatchesHandWritten(t *testing.T, m *program.Model) {
	const seqs, maxLen = 3, 10
	net, err := nn.New(m, 13)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range net.Params() { // sinks and norms away from their initial constants
		for j := range p.W {
			p.W[j] += float32(0.05 * math.Sin(float64(i*7+j)))
		}
	}
	whole := map[params.ID][]float32{}
	for _, w := range net.Params() {
		whole[w.ID] = w.W
	}
	start := time.Now()
	f, err := OpenFeeder(context.Background(), m, seqs, 8, maxLen, Options{Mode: Emulated, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Logf("generated and compiled in %v (feeds of %v rows)", time.Since(start), f.rows)
	if m.Attention.LatentAttention() && !slices.ContainsFunc(f.low.KernelFiles(), func(k cudastep.KernelFile) bool { return k.Name == "kernels_mla.cu" }) {
		t.Fatal("the feeding programs of latent attention launch no kernel of kernels_mla.cu")
	}
	if err := f.LoadParams(func(id params.ID) []float32 { return whole[id] }); err != nil {
		t.Fatal(err)
	}
	d, _ := m.Dims()
	vocab := int(m.Vocab)
	// Each slot's sequence: a prompt, then its greedy tokens; ref steps a one-sequence
	// decoder alongside as the reference.
	type slot struct {
		toks []int32
		fed  int
		ref  *nn.Decoder
		want []float32
	}
	prompts := [][]int32{{1, 5, 9, 2, 7}, {4}, {3, 8, 6, 11, 12, 10, 1}, {9, 9, 2}}
	slots := make([]*slot, seqs)
	next := 0
	admit := func(i int) {
		slots[i] = &slot{toks: append([]int32(nil), prompts[next]...), ref: net.NewDecoder(1, maxLen)}
		next++
	}
	for i := range slots {
		admit(i)
	}
	chunk := []int{3, 1, 4}
	worst := 0.0
	for call := 0; call < 40; call++ {
		runs, pos := make([][]int32, seqs), make([]int, seqs)
		busy := false
		for i, s := range slots {
			if s == nil || i == 2 && call < 2 {
				continue
			}
			n := min(chunk[i], len(s.toks)-s.fed)
			runs[i], pos[i] = s.toks[s.fed:s.fed+n], s.fed
			for _, tok := range runs[i] {
				lg, err := s.ref.Step([]int32{tok})
				if err != nil {
					t.Fatal(err)
				}
				s.want = append(s.want[:0], lg...)
			}
			busy = true
		}
		if !busy {
			break
		}
		got, err := f.Feed(runs, pos)
		if err != nil {
			t.Fatalf("call %d: %v", call, err)
		}
		for i, s := range slots {
			if len(runs[i]) == 0 {
				continue
			}
			row := got[i*d.V : (i+1)*d.V]
			var scale float64
			for _, v := range s.want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for j, v := range s.want {
				worst = math.Max(worst, math.Abs(float64(row[j]-v))/scale)
			}
			g, w := argmax(row, 1, vocab)[0], argmax(s.want, 1, vocab)[0]
			if g != w {
				t.Fatalf("call %d, sequence %d at %d: greedy token %d, nn's %d", call, i, pos[i], g, w)
			}
			s.fed += len(runs[i])
			if s.fed < len(s.toks) {
				continue
			}
			if len(s.toks) == maxLen {
				slots[i] = nil // full: the slot frees
				if next < len(prompts) {
					admit(i)
				}
				continue
			}
			s.toks = append(s.toks, g)
		}
	}
	if next != len(prompts) {
		t.Fatalf("%d of %d sequences admitted", next, len(prompts))
	}
	if worst > 1e-4 {
		t.Errorf("logits differ from nn's by %.3g relative", worst)
	}
	t.Logf("logits within %.2g of nn's", worst)
}
