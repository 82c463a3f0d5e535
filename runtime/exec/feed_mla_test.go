package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestFeedLatentAttentionReusesSlots: continuous batching of a DeepSeek-V2-Lite-shaped
// model (latent attention, shared experts) through the feeding program, as a server runs
// it: three slots, five requests of different prompt lengths, each slot reading its prompt
// in its own chunk size and then decoding greedily until its cache is full, when the slot
// frees and the next request takes it from position 0 (over the cache rows its last
// sequence left). Every fed sequence's logits match runtime/nn's one-sequence decoder,
// which caches the compressed latent instead of the heads' keys and values, within 1e-5
// of the largest, and the greedy tokens are equal.
func TestFeedLatentAttentionReusesSlots(t *testing.T) {
	m := variantModel(t, mlaVariants()[1])
	m.SeqLen = 16
	const seqs, rows, maxLen = 3, 10, 12
	net, err := nn.New(m, 5)
	if err != nil {
		t.Fatal(err)
	}
	randomizeConstants(net)
	prog, err := step.LowerFeed(m, seqs, rows, maxLen)
	if err != nil {
		t.Fatal(err)
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
	type slot struct {
		toks []int32
		fed  int
		ref  *nn.Decoder
		want []float32
	}
	prompts := [][]int32{{1, 5, 9, 2, 7}, {4}, {3, 8, 6, 11, 12, 10, 1}, {9, 9, 2}, {200, 17}}
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
	V := int(m.PaddedVocab())
	worst := 0.0
	for call := 0; call < 60; call++ {
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
		got, err := ex.Feed(runs, pos)
		if err != nil {
			t.Fatalf("call %d: %v", call, err)
		}
		for i, s := range slots {
			if len(runs[i]) == 0 {
				continue
			}
			row := got[i*V : (i+1)*V]
			var scale float64
			for _, v := range s.want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for j, v := range s.want {
				worst = math.Max(worst, math.Abs(float64(row[j]-v))/scale)
			}
			g, w := greedy(row[:m.Vocab]), greedy(s.want[:m.Vocab])
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
	if worst > 1e-5 {
		t.Errorf("logits differ from nn's by %.3g relative", worst)
	}
	t.Logf("logits within %.2g of nn's", worst)
}

// greedy is the index of the largest logit.
func greedy(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}
