package serve

import (
	"math"
	"sort"

	"github.com/moec-dev/moec/runtime/rng"
)

// sampler draws tokens the way runtime/generate does (same temperature, top-k and random
// stream keyed by seed and token index), so a request served here continues a prompt
// exactly as `moec generate` would with the same seed. Its scratch is per slot.
type sampler struct {
	probs []float64
	order []int
}

func newSampler(vocab int) *sampler {
	return &sampler{probs: make([]float64, vocab), order: make([]int, vocab)}
}

// sample picks the argmax at temperature 0, else draws from softmax(logits/temperature)
// restricted to the topK most likely tokens with the stream of (seed, index).
func (s *sampler) sample(logits []float32, temperature float64, topK int, seed, index int64) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temperature == 0 {
		return best
	}
	order := s.order[:len(logits)]
	for i := range order {
		order[i] = i
	}
	k := len(logits)
	if topK > 0 && topK < k {
		sort.SliceStable(order, func(a, b int) bool { return logits[order[a]] > logits[order[b]] })
		k = topK
	}
	mx := float64(logits[best])
	var sum float64
	for j := 0; j < k; j++ {
		p := math.Exp((float64(logits[order[j]]) - mx) / temperature)
		s.probs[j] = p
		sum += p
	}
	u := rng.New(rng.Key(seed, index, 0, rng.PurposeSample)).Float64() * sum
	for j := 0; j < k; j++ {
		u -= s.probs[j]
		if u < 0 {
			return order[j]
		}
	}
	return order[k-1]
}
