package exec

import (
	"errors"
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// smallestBudget is the least device budget that lowers m at l under the unified cache in
// pages of page bytes: what the refusal of a one-byte budget names.
func smallestBudget(t *testing.T, m *program.Model, b step.Batch, l step.Layout, page int64) int64 {
	t.Helper()
	l.Cache = step.Cache{Budget: 1, Page: page}
	_, err := step.Lower(m, b, l)
	var le *step.LayoutError
	if !errors.As(err, &le) || le.Budget == nil {
		t.Fatalf("a one-byte budget lowered: %v", err)
	}
	return le.Budget.Need
}

// TestCacheTrainsLikeNoCache trains several steps with the optimizer through the unified
// cache at the smallest budget that runs (every unit evicted as soon as the next needs its
// pages) and without it: the losses agree to 1e-6, the device arena's peak stays within
// the budget while the program without the cache peaks higher, and the bytes the executor
// moves are the listing's.
func TestCacheTrainsLikeNoCache(t *testing.T) {
	const mb, T, M, steps, page = 2, 16, 2, 5, 4096
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		m.MoE.Router = program.RouteHidden
	}
	cases := []struct {
		name   string
		edit   func(*program.Model)
		layout step.Layout
	}{
		{"one rank", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}},
		{"dp2 zero1", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 1}},
		{"tp2", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}},
		{"pp2", plain, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}},
		{"dp2 ep2 zero2", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 2}},
		{"dp2 ep2 zero3", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"dp4 ep2 zero3", func(*program.Model) {}, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"dp2 zero3 recompute", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3, Recompute: program.RecomputeFull}},
		{"one rank, recompute", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			c.edit(m)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			cached := c.layout
			cached.Cache = step.Cache{Budget: smallestBudget(t, m, b, c.layout, page), Page: page}
			cfg := trainConfig(steps)
			plainRun := newTrainer(t, m, net, c.layout, b, cfg)
			cacheRun := newTrainer(t, m, net, cached, b, cfg)
			if err := step.VerifyLayout(cacheRun.progs); err != nil {
				t.Fatal(err)
			}
			var listed int64
			for r, p := range cacheRun.progs {
				peak, without := p.Memory.Peak[step.Device], plainRun.progs[r].Memory.Peak[step.Device]
				if peak > cached.Cache.Budget || p.Memory.Arena[step.Device] > cached.Cache.Budget || without <= cached.Cache.Budget {
					t.Errorf("rank %d: device peak %d with a budget of %d, %d without the cache", r, peak, cached.Cache.Budget, without)
				}
				fetched, written := step.CacheMoves(p)
				if fetched == 0 || written == 0 {
					t.Errorf("rank %d: the program moves %d bytes in and %d out", r, fetched, written)
				}
				listed += fetched + written
				if r == 0 {
					t.Logf("rank 0: budget %d, device peak %d, arena %d (%d without the cache), host arena %d; %d bytes fetched, %d written back per step",
						cached.Cache.Budget, peak, p.Memory.Arena[step.Device], without, p.Memory.Arena[step.Host], fetched, written)
				}
			}
			for s := int64(0); s < steps; s++ {
				micro := make([][]int32, c.layout.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*s+int64(i))
				}
				want, _ := plainRun.step(t, micro, Options{Seed: 3, Step: s})
				got, _ := cacheRun.step(t, micro, Options{Seed: 3, Step: s})
				if math.Abs(got-want) > 1e-6*math.Abs(want) {
					t.Errorf("step %d: loss %.9f with the cache, %.9f without", s, got, want)
				}
				if s == steps-1 {
					t.Logf("step %d: loss %.9f with the cache, %.9f without", s, got, want)
				}
			}
			var moved int64
			for _, ex := range cacheRun.exs {
				moved += ex.stats.CacheMoved
			}
			if moved != listed {
				t.Errorf("the last step moved %d bytes, the listings say %d", moved, listed)
			}
		})
	}
}

// TestCacheWritebackMatters drops one gradient write-back from the cached program: the
// host gradient misses a micro-batch's contribution and the second step's loss moves off
// the program's without the cache (the comparison above can fail).
func TestCacheWritebackMatters(t *testing.T) {
	const mb, T, M, page = 2, 16, 2, 4096
	m := hunyuanTiny(t, 8)
	net, err := nn.New(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	cached := l
	cached.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
	cfg := trainConfig(2)
	plainRun := newTrainer(t, m, net, l, b, cfg)
	cacheRun := newTrainer(t, m, net, cached, b, cfg)
	p := cacheRun.progs[0]
	for i := len(p.Ops) - 1; i >= 0; i-- {
		if p.Ops[i].Kind == step.OpCacheWriteback {
			// The last write-back (the embedding's, second micro-batch); the memory plan
			// still holds for the ops left.
			p.Ops = append(p.Ops[:i:i], p.Ops[i+1:]...)
			break
		}
	}
	var want, got float64
	for s := int64(0); s < 2; s++ {
		micro := make([][]int32, M)
		for i := range micro {
			micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*s+int64(i))
		}
		want, _ = plainRun.step(t, micro, Options{Seed: 3, Step: s})
		got, _ = cacheRun.step(t, micro, Options{Seed: 3, Step: s})
	}
	if math.Abs(got-want) <= 1e-6*math.Abs(want) {
		t.Errorf("without a write-back the second step's loss %.9f still equals %.9f", got, want)
	}
}
