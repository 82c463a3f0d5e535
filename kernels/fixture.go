package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Fixture builds one Env on which every kernel of ks can run: random inputs, valid
// integer inputs (token ids, targets, positions), and every intermediate buffer
// (routing indices, activations, ...) produced by running the Go references in order, so
// that index buffers are mutually consistent. The same seed gives the same Env.
func Fixture(ks []*Kernel, sh Shape, n, seq int64, seed uint64) (Env, error) {
	if n < 1 || seq < 1 {
		return Env{}, fmt.Errorf("fixture needs n >= 1 and seq >= 1, have %d, %d", n, seq)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d6f6563))
	env := NewEnv()
	env.S["n"] = float64(n)
	env.S["seq"] = float64(seq)
	env.S["rows"] = float64(n)
	env.S["reuse"] = 0
	env.S["numel"] = float64(n*sh.DModel + 3) // deliberately not a multiple of a vector width
	env.S["ce_scale"] = 1 / float64(n)
	env.S["lr"], env.S["beta1"], env.S["beta2"], env.S["eps"], env.S["wd"] = 1e-3, 0.9, 0.95, 1e-8, 0.1
	env.S["bc1"], env.S["bc2"] = 1-math.Pow(0.9, 3), 1-math.Pow(0.95, 3)
	for _, k := range ks {
		for _, p := range k.Params {
			if !p.Buffer {
				continue
			}
			size, err := k.Size(p, env)
			if err != nil {
				return Env{}, fmt.Errorf("fixture: size of %s.%s: %w", k.Name, p.Name, err)
			}
			if p.Elem == I32 {
				if _, ok := env.I[p.Name]; !ok {
					env.I[p.Name] = make([]int32, size)
				}
				continue
			}
			if _, ok := env.F[p.Name]; !ok {
				b := make([]float32, size)
				for i := range b {
					b[i] = float32(rng.Float64()*2 - 1)
				}
				env.F[p.Name] = b
			}
		}
	}
	fill := func(name string, bound int64) {
		for i := range env.I[name] {
			env.I[name][i] = int32(rng.Int64N(bound))
		}
	}
	fill("ids", sh.Vocab)
	fill("targets", sh.Vocab)
	fill("pos", seq)
	for i := range env.F["adam_v"] {
		env.F["adam_v"][i] = float32(rng.Float64()) // second moments are non-negative
	}
	for _, k := range ks {
		if err := k.Ref(env); err != nil {
			return Env{}, fmt.Errorf("fixture: %s: %w", k.Name, err)
		}
	}
	return env, nil
}
