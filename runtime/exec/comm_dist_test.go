package exec

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// onRanks runs f for every rank concurrently; a rank that fails aborts comms, so the
// others stop instead of waiting for it.
func onRanks(comms []dist.Comm, f func(r int) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r := range comms {
		wg.Go(func() {
			if errs[r] = f(r); errs[r] != nil {
				comms[r].Abort(errs[r])
			}
		})
	}
	wg.Wait()
	return errs
}

func firstError(t *testing.T, what string, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("%s: rank %d: %v", what, r, err)
		}
	}
}

// relDiff is the largest difference between a and b relative to the largest magnitude
// in a (or 1e-30 for an all-zero a).
func relDiff(a, b []float32) float64 {
	var d, scale float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(a[i])))
	}
	return d / max(scale, 1e-30)
}

// TestMessagePassingMatchesSharedMemory runs each layout twice, its ranks over the
// shared-memory World and over dist.Local (the in-process dist.Comm, which behaves like
// MPI: separate buffers, messages, splits), for three training steps: the losses, every
// rank's gradients, and the assembled weights and moments agree to float32 rounding.
func TestMessagePassingMatchesSharedMemory(t *testing.T) {
	const mb, T, steps = 2, 16, 3
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads = false
	m.Attention.ShareWeights = 1
	m.MoE.Router = program.RouteHidden
	net, err := nn.New(m, 8)
	if err != nil {
		t.Fatal(err)
	}
	weights := tensorsOf(net)
	cfg := trainConfig(steps)
	batches := func(s int64) [][]int32 {
		out := make([][]int32, 4)
		for i := range out {
			out[i] = randomTokens(mb, T, int(m.Vocab), 31*s+int64(i))
		}
		return out
	}
	for i, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 2, PP: 2},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 1},
		// The unified cache at its smallest budget, with the asynchronous host update.
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3, Cache: step.Cache{Page: 4096}},
		// hunyuan_tiny as it is (talking heads, attention weights shared with p = 0.5, the
		// token-embedding router): the attention weights and their gradients go between
		// the stages after the activations, the router table's copies summed over their group.
		{DP: 2, EP: 1, TP: 1, PP: 2},
	} {
		whole := i == 6
		name := fmt.Sprintf("dp%d-ep%d-tp%d-pp%d-zero%d", l.DP, l.EP, l.TP, l.PP, l.ZeRO)
		if l.Cache.Page > 0 {
			name += "-cache"
		}
		if whole {
			name += "-hunyuan"
		}
		t.Run(name, func(t *testing.T) {
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: 4 / l.DP}
			m, weights := m, weights
			if l.Cache.Page > 0 || whole {
				// hunyuan_tiny as it is: its router table lies at the far end of the flat
				// vector from the token table, so the embedding's fetch reads two runs.
				m = hunyuanTiny(t, 8)
				net, err := nn.New(m, 8)
				if err != nil {
					t.Fatal(err)
				}
				weights = tensorsOf(net)
				if l.Cache.Page > 0 {
					l.Cache.Budget = smallestBudget(t, m, b, l, l.Cache.Page)
				}
			}
			overlap := func(lc *Local) error {
				if !l.Cache.On() {
					return nil
				}
				if ok, err := lc.SetHostOverlap(true); err != nil || !ok {
					return fmt.Errorf("the overlap does not apply (%v)", err)
				}
				return nil
			}
			shared, err := NewLocal(m, b, l, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := shared.SetOptimizer(cfg); err != nil {
				t.Fatal(err)
			}
			if err := overlap(shared); err != nil {
				t.Fatal(err)
			}
			if err := shared.Load(weights); err != nil {
				t.Fatal(err)
			}
			comms, err := dist.Local(l.World(), 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ranks := make([]*Local, len(comms))
			firstError(t, "setting up", onRanks(comms, func(r int) error {
				lc, err := NewRankOf(m, b, l, comms[r])
				if err != nil {
					return err
				}
				ranks[r] = lc
				if err := lc.SetOptimizer(cfg); err != nil {
					return err
				}
				if err := overlap(lc); err != nil {
					return err
				}
				return lc.Load(weights)
			}))
			var worst float64
			for s := int64(0); s < steps; s++ {
				want, err := shared.Step(batches(s), Options{Seed: 1, Step: s})
				if err != nil {
					t.Fatal(err)
				}
				got := make([]Stats, len(comms))
				firstError(t, fmt.Sprintf("step %d", s), onRanks(comms, func(r int) (err error) {
					got[r], err = ranks[r].Step(batches(s), Options{Seed: 1, Step: s})
					return err
				}))
				for r, st := range got {
					for _, term := range []struct {
						name      string
						got, want float64
					}{{"loss", st.Loss, want.Loss}, {"balance", st.Balance, want.Balance}, {"grad norm", st.GradNorm, want.GradNorm}} {
						if math.Abs(term.got-term.want) > 1e-5*math.Abs(term.want) {
							t.Errorf("step %d rank %d: %s %.8g over messages, %.8g in shared memory", s, r, term.name, term.got, term.want)
						}
					}
				}
				for r, lc := range ranks {
					a, b := shared.Ranks[r], lc.Ranks[0]
					for i, buf := range a.p.Buffers {
						if buf.Kind != step.KindGrad || a.f32[i] == nil {
							continue
						}
						d := relDiff(a.f32[i], b.f32[i])
						worst = max(worst, d)
						if d > 1e-5 {
							t.Errorf("step %d rank %d: gradient %s differs by %.3g (relative)", s, r, buf.Name, d)
						}
					}
				}
			}
			wantModel, wantMoments, err := shared.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			models := make([][2][]safetensors.Tensor, len(comms))
			firstError(t, "assembling", onRanks(comms, func(r int) (err error) {
				models[r][0], models[r][1], err = ranks[r].Tensors()
				return err
			}))
			for r := 1; r < len(models); r++ {
				if models[r][0] != nil || models[r][1] != nil {
					t.Errorf("rank %d got tensors; only rank 0 should", r)
				}
			}
			for k, pair := range [][2][]safetensors.Tensor{{wantModel, models[0][0]}, {wantMoments, models[0][1]}} {
				if len(pair[0]) != len(pair[1]) || len(pair[0]) == 0 {
					t.Fatalf("set %d: %d tensors assembled over messages, %d in shared memory", k, len(pair[1]), len(pair[0]))
				}
				for i, w := range pair[0] {
					g := pair[1][i]
					if g.Name != w.Name {
						t.Fatalf("tensor %d is %s, want %s", i, g.Name, w.Name)
					}
					d := relDiff(w.Data, g.Data)
					worst = max(worst, d)
					if d > 1e-5 {
						t.Errorf("%s differs by %.3g (relative)", w.Name, d)
					}
				}
			}
			t.Logf("largest relative difference: %.3g", worst)
		})
	}
}
