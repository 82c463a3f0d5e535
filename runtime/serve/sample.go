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
	probs     []float64
	order     []int
	counts    []int     // times each token was generated so far (for the penalties)
	penalized []float32 // the logits less the penalties
}

func newSampler(vocab int) *sampler {
	return &sampler{probs: make([]float64, vocab), order: make([]int, vocab), counts: make([]int, vocab),
		penalized: make([]float32, vocab)}
}

// penalties are OpenAI's presence and frequency penalties: over the tokens generated so far
// (not the prompt), logit -= count*frequency + (count > 0)*presence, before temperature.
type penalties struct {
	presence, frequency float64
}

// reset forgets the tokens counted for the penalties: a new request takes the slot.
func (s *sampler) reset() { clear(s.counts) }

// generated counts tok for the penalties.
func (s *sampler) generated(tok int) { s.counts[tok]++ }

// penalize returns logits less p's penalties (logits itself when p is neutral).
func (s *sampler) penalize(logits []float32, p penalties) []float32 {
	if p == (penalties{}) {
		return logits
	}
	out := s.penalized[:len(logits)]
	for i, v := range logits {
		c := s.counts[i]
		pen := float64(c) * p.frequency
		if c > 0 {
			pen += p.presence
		}
		out[i] = v - float32(pen)
	}
	return out
}

// tokenLogprob is a generated token's log-probability under the model (log-softmax of the
// raw logits: before penalties, temperature, top-k and top-p) and the most likely tokens
// at its position with theirs, most likely first.
type tokenLogprob struct {
	token   byte
	logprob float64
	top     []byteLogprob
}

type byteLogprob struct {
	token   byte
	logprob float64
}

// logprobsOf computes tok's tokenLogprob with top alternatives.
func logprobsOf(logits []float32, tok, top int) tokenLogprob {
	mx := float64(logits[0])
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	lp := tokenLogprob{token: byte(tok), logprob: float64(logits[tok]) - lse}
	if top > 0 {
		idx := make([]int, len(logits))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
		lp.top = make([]byteLogprob, min(top, len(idx)))
		for k := range lp.top {
			lp.top[k] = byteLogprob{token: byte(idx[k]), logprob: float64(logits[idx[k]]) - lse}
		}
	}
	return lp
}

// sample picks the argmax at temperature 0, else draws from softmax(logits/temperature)
// restricted to the topK most likely tokens and then to the fewest most likely of them
// whose probability reaches topP (nucleus sampling; topP 1 keeps them all, and is then
// exactly `moec generate`'s draw), with the stream of (seed, index, choice): choice 0 is
// `moec generate`'s stream, and the other choices of a request with n > 1 draw their own.
func (s *sampler) sample(logits []float32, temperature float64, topK int, topP float64, seed, index int64, choice int) int {
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
	u := rng.New(rng.Key(seed, index, choice, rng.PurposeSample)).Float64() * sum
	for j := 0; j < k; j++ {
		u -= s.probs[j]
		if u < 0 {
			return order[j]
		}
	}
	return order[k-1]
}
