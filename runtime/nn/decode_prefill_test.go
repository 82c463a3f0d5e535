package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// Feed reads chunks of a sequence's tokens in one call while other sequences decode one
// token or sit out; each sequence's logits after its last token must be those a
// one-sequence decoder gives feeding the same tokens one Step at a time (1e-5 relative),
// for chunk sizes that do and do not divide the sequence, through every attention and
// routing variant of the peer cases (windows, sinks, talking heads, shared caches,
// learned positions, token-embedding routing).
func TestFeedMatchesStep(t *testing.T) {
	for name, mk := range peerCases() {
		t.Run(name, func(t *testing.T) { checkFeedMatchesStep(t, mk(), 75) })
	}
}

// checkFeedMatchesStep builds cfg with randomised weights and checks Feed against
// token-by-token Step over three sequences of T tokens (T longer than attnBlockRows, so a
// chunk's attention spans several blocks; a learned-position model's T is its positions):
// sequence 0 reads chunks of 1, 2, 3, 4, 33 or T tokens, sequence 1 one token a call,
// sequence 2 waits two calls, then reads chunks one longer than sequence 0's.
func checkFeedMatchesStep(t *testing.T, cfg *program.Model, T int) {
	t.Helper()
	if cfg.MoE != nil {
		cfg.MoE.CapacityFactor = 0 // the decoder routes dropless
	}
	m, err := New(cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 10))
	for _, p := range m.Params() {
		for i := range p.W {
			p.W[i] += float32(0.1 * r.NormFloat64())
		}
	}
	if cfg.Position == program.Learned && cfg.MaxPosition > 0 {
		T = int(cfg.MaxPosition) // learned positions end there
	}
	V := int(cfg.PaddedVocab())
	seqs, want := make([][]int32, 3), make([][][]float32, 3)
	for s := range seqs {
		one := m.NewDecoder(1, T)
		for range T {
			tok := int32(r.IntN(int(cfg.Vocab)))
			seqs[s] = append(seqs[s], tok)
			lg, err := one.Step([]int32{tok})
			if err != nil {
				t.Fatal(err)
			}
			want[s] = append(want[s], append([]float32(nil), lg...))
		}
	}
	for _, chunk := range []int{1, 2, 3, 4, 33, T} {
		t.Run(fmt.Sprint("chunk", chunk), func(t *testing.T) {
			dec := m.NewDecoder(3, T)
			fed := make([]int, 3)
			for call := 0; fed[0] < T || fed[1] < T || fed[2] < T; call++ {
				runs, pos := make([][]int32, 3), make([]int, 3)
				for s, size := range []int{chunk, 1, chunk + 1} {
					if s == 2 && call < 2 {
						continue
					}
					n := min(size, T-fed[s])
					runs[s], pos[s] = seqs[s][fed[s]:fed[s]+n], fed[s]
				}
				lg, err := dec.Feed(runs, pos)
				if err != nil {
					t.Fatal(err)
				}
				for s, run := range runs {
					if len(run) == 0 {
						continue
					}
					fed[s] += len(run)
					w := want[s][fed[s]-1]
					if d := relDiff(lg[s*V:(s+1)*V], w); d > 1e-5 {
						t.Fatalf("call %d sequence %d after position %d: logits differ by %g (relative)", call, s, fed[s]-1, d)
					}
				}
			}
		})
	}
}

// Feed refuses what StepSlots refuses: runs past the cache, unknown tokens, a wrong count.
func TestFeedRejects(t *testing.T) {
	m, err := New(tinyDense(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dec := m.NewDecoder(2, 4)
	for _, c := range []struct {
		name string
		runs [][]int32
		pos  []int
	}{
		{"one run for two sequences", [][]int32{{1}}, []int{0}},
		{"past the cache", [][]int32{{1, 2, 3}, nil}, []int{2, 0}},
		{"a negative position", [][]int32{nil, {1}}, []int{0, -1}},
		{"a token outside the vocabulary", [][]int32{{1, 13}, nil}, []int{0, 0}},
	} {
		if _, err := dec.Feed(c.runs, c.pos); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// relDiff is the largest difference of a and b relative to b's largest magnitude.
func relDiff(a, b []float32) float64 {
	var scale float64
	for _, v := range b {
		scale = max(scale, math.Abs(float64(v)))
	}
	return maxAbsDiff(a, b) / max(scale, 1e-30)
}
