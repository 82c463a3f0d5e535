package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestShardedMatchesSingle splits one batch over ranks in every data × expert layout and
// checks that the ranks' losses average to the single rank's and that their gradients,
// summed over the ranks holding each tensor and divided by the number of ranks, are the
// single rank's: for dense tensors and for experts, with capacity dropping assignments,
// with the balance and z losses on, and with token-embedding routing.
func TestShardedMatchesSingle(t *testing.T) {
	models := map[string]func() *program.Model{
		"top2-capacity": func() *program.Model {
			m := tinyMoE()
			m.MoE.CapacityFactor = 1.0 // tight: some assignments are dropped
			// Large auxiliary losses, so a wrong scale of their gradients shows.
			m.MoE.BalanceLoss, m.MoE.ZLoss = 20, 0.5
			return m
		},
		"shared-gated-expert": func() *program.Model {
			m := tinyMoE()
			m.MoE.SharedExperts, m.MoE.SharedGate = 1, true
			return m
		},
		"top1-token-embedding-dropless": func() *program.Model {
			m := tinyMoE()
			m.MoE.TopK, m.MoE.Router, m.MoE.RouterDim = 1, program.RouteTokenEmbedding, 4
			m.MoE.BalanceLoss = 20
			return m
		},
	}
	layouts := []struct{ ranks, ep int }{{2, 1}, {2, 2}, {4, 1}, {4, 2}, {4, 4}}
	for name, mk := range models {
		m := mk()
		const B, T = 8, 6
		b := randBatch(rand.New(rand.NewPCG(3, 4)), m.Vocab, B, T)
		ref, err := New(m, 7)
		if err != nil {
			t.Fatal(err)
		}
		o := StepOptions{Seed: 1, Step: 2, Train: true}
		want, err := ref.ForwardBackward(b, o)
		if err != nil {
			t.Fatal(err)
		}
		if name == "top2-capacity" && want.Dropped == 0 {
			t.Fatalf("%s: the case is meant to drop assignments", name)
		}
		refG := map[string][]float32{}
		for _, p := range ref.Params() {
			refG[p.Name] = p.G
		}
		for _, l := range layouts {
			t.Run(fmt.Sprintf("%s/ranks%d-ep%d", name, l.ranks, l.ep), func(t *testing.T) {
				got, grads := runSharded(t, m, b, o, l.ranks, l.ep)
				if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) {
					t.Errorf("loss %v, single rank %v", got.Loss, want.Loss)
				}
				if got.Dropped != want.Dropped || fmt.Sprint(got.ExpertTokens) != fmt.Sprint(want.ExpertTokens) {
					t.Errorf("dropped %d tokens per expert %v, single rank %d %v", got.Dropped, got.ExpertTokens, want.Dropped, want.ExpertTokens)
				}
				if math.Abs(got.Balance-want.Balance) > 1e-6 {
					t.Errorf("balance %v, single rank %v", got.Balance, want.Balance)
				}
				if len(grads) != len(refG) {
					t.Fatalf("%d tensors across ranks, single rank has %d", len(grads), len(refG))
				}
				for n, g := range grads {
					w := refG[n]
					var scale float64
					for _, v := range w {
						scale = math.Max(scale, math.Abs(float64(v)))
					}
					for i := range w {
						if math.Abs(float64(g[i]-w[i])) > 2e-5*scale+1e-8 {
							t.Errorf("%s[%d] = %g, single rank %g", n, i, g[i], w[i])
							break
						}
					}
				}
			})
		}
	}
}

// runSharded runs one step on ranks in-process ranks with ep-way expert parallelism and
// returns the averaged statistics and each tensor's gradient reduced as the trainer does.
func runSharded(t *testing.T, m *program.Model, b Batch, o StepOptions, ranks, ep int) (Stats, map[string][]float32) {
	t.Helper()
	comms, err := dist.Local(ranks, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	per := b.B / ranks
	stats := make([]Stats, ranks)
	models := make([]*Model, ranks)
	errs := make([]error, ranks)
	var wg sync.WaitGroup
	for r := 0; r < ranks; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh := Shard{World: comms[r]}
			if ep > 1 {
				if sh.EP, errs[r] = comms[r].Split(r/ep, r%ep, "ep"); errs[r] != nil {
					return
				}
			}
			if models[r], errs[r] = NewSharded(m, 7, sh); errs[r] != nil {
				comms[r].Abort(errs[r])
				return
			}
			rows := b.Tokens[r*per*(b.T+1) : (r+1)*per*(b.T+1)]
			stats[r], errs[r] = models[r].ForwardBackward(Batch{B: per, T: b.T, Tokens: rows}, o)
			if errs[r] != nil {
				comms[r].Abort(errs[r])
			}
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	var avg Stats
	avg.Dropped, avg.ExpertTokens = stats[0].Dropped, stats[0].ExpertTokens
	avg.Balance = stats[0].Balance
	for _, s := range stats {
		avg.Loss += s.Loss / float64(ranks)
	}
	sum := map[string][]float32{}
	for _, mr := range models {
		for _, p := range mr.Params() {
			g := sum[p.Name]
			if g == nil {
				g = make([]float32, len(p.G))
				sum[p.Name] = g
			}
			for i, v := range p.G {
				g[i] += v / float32(ranks)
			}
		}
	}
	return avg, sum
}
