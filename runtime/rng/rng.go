package rng

import "math"

// Purpose separates independent random streams that share a seed and step.
type Purpose uint64

const (
	PurposeInit        Purpose = 1 // parameter initialisation
	PurposeAttnShare   Purpose = 2 // stochastic attention-weight sharing dice
	PurposeRouterNoise Purpose = 3 // router jitter, if any
	PurposeDataOrder   Purpose = 4 // corpus shuffling and window sampling
	PurposeGrowNoise   Purpose = 5 // noise added to copied experts on growth
	PurposeSample      Purpose = 6 // token sampling during generation
	PurposeDropout     Purpose = 7
)

// mix is SplitMix64's finaliser: a bijective avalanche on 64 bits.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Key derives a stream key from (seed, step, layer, purpose). The same tuple always gives
// the same key, whatever the layout, the rank or whether the run was resumed: this is what
// makes runs reproducible across parallel layouts and restarts.
func Key(seed int64, step int64, layer int, purpose Purpose) uint64 {
	h := mix(uint64(seed))
	h = mix(h ^ uint64(step))
	h = mix(h ^ uint64(int64(layer)))
	return mix(h ^ uint64(purpose))
}

// Stream is a counter-based generator: value i of the stream is mix(key, i). It holds only
// the key and a counter, so its state can be saved and restored exactly.
type Stream struct {
	Key     uint64
	Counter uint64
}

// New returns the stream for a key.
func New(key uint64) *Stream { return &Stream{Key: key} }

// Uint64 returns the next 64 random bits.
func (s *Stream) Uint64() uint64 {
	v := mix(s.Key ^ mix(s.Counter))
	s.Counter++
	return v
}

// Float64 returns a uniform value in [0, 1).
func (s *Stream) Float64() float64 { return float64(s.Uint64()>>11) / (1 << 53) }

// Intn returns a uniform value in [0, n).
func (s *Stream) Intn(n int) int {
	if n <= 0 {
		return 0
	}
	return int(s.Uint64() % uint64(n))
}

// Normal returns a standard normal value (Box-Muller).
func (s *Stream) Normal() float64 {
	u1 := s.Float64()
	if u1 < 1e-300 {
		u1 = 1e-300
	}
	u2 := s.Float64()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// Bernoulli returns true with probability p.
func (s *Stream) Bernoulli(p float64) bool { return s.Float64() < p }
