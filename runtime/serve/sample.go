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
// restricted to the topK most likely tokens and then to the fewest most likely of them
// whose probability reaches topP (nucleus sampling; topP 1 keeps them all, and is then
// exactly `moec generate`'s draw), with the stream of (seed, index).
func (s *sampler) sample(logits []float32, temperature float64, topK int, topP float64, seed, index int64) int {
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
	nucleus := topP < 1
	if topK > 0 && topK < k || nucleus {
		sort.SliceStable(order, func(a, b int) bool { return logits[order[a]] > logits[order[b]] })
		if topK > 0 && topK < k {
			k = topK
		}
	}
	mx := float64(logits[best])
	var sum float64
	for j := 0; j < k; j++ {
		p := math.Exp((float64(logits[order[j]]) - mx) / temperature)
		s.probs[j] = p
		sum += p
	}
	if nucleus {
		// order is most likely first: keep the shortest prefix holding topP of the mass
		// (at least one token, so topP 0 is greedy).
		var acc float64
		for j := 0; j < k; j++ {
			acc += s.probs[j]
			if acc >= topP*sum {
				k, sum = j+1, acc
				break
			}
		}
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
