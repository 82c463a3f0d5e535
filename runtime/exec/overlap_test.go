package exec

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
)

// overlapRun trains steps steps of tr and returns each step's summed Stats per rank.
func overlapRun(t *testing.T, tr *trainer, m *program.Model, dp, M, mb, T, steps int) [][]Stats {
	t.Helper()
	var out [][]Stats
	for s := 0; s < steps; s++ {
		micro := make([][]int32, dp*M)
		for i := range micro {
			micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*int64(s)+int64(i))
		}
		stats := make([]Stats, len(tr.exs))
		errs := make([]error, len(tr.exs))
		var wg sync.WaitGroup
		for r, ex := range tr.exs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, b := tr.progs[r].Coord, tr.progs[r].Batch
				stats[r], errs[r] = ex.Run(micro[c.DP*b.Micro:(c.DP+1)*b.Micro], Options{Seed: 3, Step: int64(s)})
				if errs[r] != nil {
					tr.world.Fail(fmt.Errorf("rank %d: %w", r, errs[r]))
				}
			}()
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("step %d rank %d: %v", s, r, err)
			}
		}
		out = append(out, stats)
	}
	return out
}

// sameState compares every rank's weights and AdamW moments bit for bit.
func sameState(t *testing.T, want, got *trainer) {
	t.Helper()
	for r := range want.exs {
		if err := got.exs[r].Settle(); err != nil {
			t.Fatal(err)
		}
		we, ge := want.exs[r], got.exs[r]
		for i, b := range we.p.Buffers {
			if b.Kind != step.KindParam || we.f32[i] == nil {
				continue
			}
			for j := range we.f32[i] {
				if we.f32[i][j] != ge.f32[i][j] {
					t.Fatalf("rank %d: %s[%d] = %v with the overlap, %v without", r, b.Name, j, ge.f32[i][j], we.f32[i][j])
				}
			}
		}
		ws, gs := we.opt.State(), ge.opt.State()
		for k := range ws {
			for j := range ws[k].Data {
				if ws[k].Data[j] != gs[k].Data[j] {
					t.Fatalf("rank %d: %s[%d] = %v with the overlap, %v without", r, ws[k].Name, j, gs[k].Data[j], ws[k].Data[j])
				}
			}
		}
	}
}

// TestHostOverlapIsBitEqual trains through the unified cache at its smallest budget with
// the asynchronous host update and without: every step's loss and gradient norm, and the
// weights and moments at the end (under ZeRO 3 each rank's shards), are bit-equal, and
// every step hands each unit's update to the helper (the counter is zero with the overlap
// removed).
func TestHostOverlapIsBitEqual(t *testing.T) {
	const mb, T, M, steps, page = 2, 16, 2, 4, 4096
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
		{"dp2 ep2", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}},
		{"tp2", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}},
		{"pp2, recompute", plain, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2, Recompute: program.RecomputeFull}},
		// AngelPTM's own layout: every model state sharded over the replicas and paged.
		{"dp2 zero3", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3}},
		{"dp2 ep2 zero3", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"dp4 ep2 zero3", func(*program.Model) {}, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"dp2 zero3, recompute", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3, Recompute: program.RecomputeFull}},
		{"dp2 pp2 zero3", plain, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2, ZeRO: 3}},
		{"dp2 tp2 zero3", plain, step.Layout{DP: 2, EP: 1, TP: 2, PP: 1, ZeRO: 3}},
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
			l := c.layout
			l.Cache = step.Cache{Budget: smallestBudget(t, m, b, c.layout, page), Page: page}
			cfg := trainConfig(steps)
			serial := newTrainer(t, m, net, l, b, cfg)
			async := newTrainer(t, m, net, l, b, cfg)
			for r, ex := range async.exs {
				if ok, err := ex.SetHostOverlap(true); err != nil || !ok {
					t.Fatalf("rank %d: the overlap does not apply (%v)", r, err)
				}
			}
			want := overlapRun(t, serial, m, l.DP, M, mb, T, steps)
			got := overlapRun(t, async, m, l.DP, M, mb, T, steps)
			for s := range want {
				for r := range want[s] {
					w, g := want[s][r], got[s][r]
					if w.Loss != g.Loss || w.CE != g.CE || w.GradNorm != g.GradNorm || w.LR != g.LR {
						t.Errorf("step %d rank %d: loss %v norm %v with the overlap, %v and %v without", s, r, g.Loss, g.GradNorm, w.Loss, w.GradNorm)
					}
					if units := len(async.exs[r].host.units); g.DeferredUnits != units || units < 2 || w.DeferredUnits != 0 {
						t.Errorf("step %d rank %d: %d units deferred of %d (%d without the overlap)", s, r, g.DeferredUnits, units, w.DeferredUnits)
					}
				}
			}
			sameState(t, serial, async)
		})
	}
}

// holdBack holds a rank's helper back until the rank blocks on the unit it updates next,
// and records the order of the rank's waits and the helper's updates.
type holdBack struct {
	mu       sync.Mutex
	cond     *sync.Cond
	units    int
	released int // units the rank has asked for
	timeline []string
}

func newHoldBack(h *hostUpdate) *holdBack {
	hb := &holdBack{units: len(h.units)}
	hb.cond = sync.NewCond(&hb.mu)
	h.waiting = func(need int) {
		hb.mu.Lock()
		hb.released = max(hb.released, need)
		hb.timeline = append(hb.timeline, fmt.Sprintf("wait %d", need))
		hb.cond.Broadcast()
		hb.mu.Unlock()
	}
	h.beforeUnit = func(u int) error {
		hb.mu.Lock()
		for hb.released <= u {
			hb.cond.Wait()
		}
		hb.timeline = append(hb.timeline, fmt.Sprintf("update %d", u))
		if u == hb.units-1 {
			hb.released = 0 // the next step's update starts over
		}
		hb.mu.Unlock()
		return nil
	}
	return hb
}

// check fails t unless every update followed a wait that asked for it, and returns the
// waits for a unit before the last: ops of the step that ran while later units were
// still pending.
func (hb *holdBack) check(t *testing.T, rank int) (early int) {
	t.Helper()
	hb.mu.Lock()
	defer hb.mu.Unlock()
	asked := 0
	for _, ev := range hb.timeline {
		var n int
		if _, err := fmt.Sscanf(ev, "wait %d", &n); err == nil {
			asked = max(asked, n)
			if n < hb.units {
				early++
			}
			continue
		}
		fmt.Sscanf(ev, "update %d", &n)
		if n >= asked {
			t.Fatalf("rank %d: unit %d updated before the rank asked for it: %v", rank, n, hb.timeline)
		}
		if n == hb.units-1 {
			asked = 0
		}
	}
	return early
}

// TestHostOverlapWaitsForEachUnit holds each rank's helper back until the rank blocks on
// the unit it updates next, so that every fetch of the next step finds its unit's update
// pending: the step must wait for each (the waits are counted), and the ops before a wait
// (under ZeRO 3 the all-gathers of the units before, collectives with the other ranks)
// run while the later units are still pending; the training stays bit-equal to the
// serial update. Without the waits the forward would read weights one update old.
func TestHostOverlapWaitsForEachUnit(t *testing.T) {
	const mb, T, M, steps, page = 2, 16, 2, 3, 4096
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 1, PP: 1},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
	} {
		t.Run(l.String(), func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			l.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
			cfg := trainConfig(steps)
			serial := newTrainer(t, m, net, l, b, cfg)
			async := newTrainer(t, m, net, l, b, cfg)
			var holds []*holdBack
			for r, ex := range async.exs {
				if ok, err := ex.SetHostOverlap(true); err != nil || !ok {
					t.Fatalf("rank %d: the overlap does not apply (%v)", r, err)
				}
				holds = append(holds, newHoldBack(ex.host))
			}
			want := overlapRun(t, serial, m, l.DP, M, mb, T, steps)
			got := overlapRun(t, async, m, l.DP, M, mb, T, steps)
			for s := range want {
				for r := range want[s] {
					if w, g := want[s][r], got[s][r]; w.Loss != g.Loss || w.GradNorm != g.GradNorm {
						t.Errorf("step %d rank %d: loss %v norm %v with the held-back update, %v and %v without", s, r, g.Loss, g.GradNorm, w.Loss, w.GradNorm)
					}
					// Steps after the first find the previous update pending: a fetch
					// waits for each unit (the head's fetch also waits for the last).
					if g, units := got[s][r], holds[r].units; s > 0 && g.UpdateWaits < units-1 {
						t.Errorf("step %d rank %d waited %d times for %d units: %v", s, r, g.UpdateWaits, units, holds[r].timeline)
					}
				}
			}
			sameState(t, serial, async)
			for r, hb := range holds {
				if early := hb.check(t, r); early < (steps-1)*(hb.units-1) {
					t.Errorf("rank %d: %d waits for a unit before the last over %d steps of %d units: %v", r, early, steps, hb.units, hb.timeline)
				}
			}
		})
	}
}

// TestHostOverlapFailureStopsTheStep fails the asynchronous host update under cache and
// ZeRO 3 in three ways while it overlaps the next step: rank 1's helper returns an error
// for one unit, or panics, or the weights turn non-finite. The failing rank's step stops
// at the op that waits for the failed unit (before it contributes to that unit's
// all-gather), the other rank, waiting in the all-gather, is stopped by the failure
// rather than by the collective timeout, and every rank's update settles afterwards.
func TestHostOverlapFailureStopsTheStep(t *testing.T) {
	const mb, T, M, page, failUnit = 2, 16, 2, 4096, 2
	for _, how := range []string{"error", "panic", "non-finite"} {
		t.Run(how, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3}
			l.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
			tr := newTrainer(t, m, net, l, b, trainConfig(4))
			for r, ex := range tr.exs {
				if ok, err := ex.SetHostOverlap(true); err != nil || !ok {
					t.Fatalf("rank %d: the overlap does not apply (%v)", r, err)
				}
			}
			failing := tr.exs[1]
			var failed sync.Once // the first update only
			failing.host.beforeUnit = func(u int) error {
				if u != failUnit || how == "non-finite" {
					return nil
				}
				var err error
				failed.Do(func() {
					if how == "panic" {
						panic("injected")
					}
					err = errors.New("injected")
				})
				return err
			}
			stepOf := func(s int) []error {
				errs := make([]error, len(tr.exs))
				var wg sync.WaitGroup
				for r, ex := range tr.exs {
					wg.Go(func() {
						micro := make([][]int32, M)
						for i := range micro {
							micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*int64(s)+int64(M*r+i))
						}
						if _, errs[r] = ex.Run(micro, Options{Seed: 3, Step: int64(s)}); errs[r] != nil {
							tr.world.Fail(fmt.Errorf("rank %d: %w", r, errs[r]))
						}
					})
				}
				wg.Wait()
				return errs
			}
			for r, err := range stepOf(0) {
				if err != nil {
					t.Fatalf("step 0 rank %d: %v", r, err)
				}
			}
			if how == "non-finite" {
				for _, ex := range tr.exs {
					if err := ex.Settle(); err != nil {
						t.Fatal(err)
					}
					for k, pc := range ex.pieces {
						if pc.id.Role == params.RoleFinalNorm {
							ex.optParams[k].W[0] = float32(math.NaN())
						}
					}
				}
			}
			errs := stepOf(1)
			for r, err := range errs {
				t.Logf("rank %d: %v", r, err)
				switch {
				case err == nil:
					t.Errorf("rank %d: step 1 ran through the failed update", r)
				case how == "non-finite":
					if nf := (*optim.NonFiniteError)(nil); !errors.As(err, &nf) {
						t.Errorf("rank %d: %v, want the non-finite norm", r, err)
					}
				case !strings.Contains(err.Error(), "injected") || strings.Contains(err.Error(), "waited"):
					t.Errorf("rank %d: %v, want the helper's failure", r, err)
				}
			}
			if how != "non-finite" {
				first := slices.IndexFunc(failing.host.needs, func(n int) bool { return n > failUnit })
				if want := fmt.Sprintf("op %d (", first); errs[1] == nil || !strings.Contains(errs[1].Error(), want) {
					t.Errorf("rank 1 stopped at %v, not at op %d, the first to wait for unit %d", errs[1], first, failUnit)
				}
			}
			for r, ex := range tr.exs {
				err := ex.Settle()
				if fails := r == 1 && how != "non-finite"; fails != (err != nil) {
					t.Errorf("rank %d settles with %v", r, err)
				}
			}
		})
	}
}

// TestDelayedUpdate trains through the unified cache with the one-step-delayed update and
// checks which weights each step ran on: step 0 on the initial weights, as the serial
// update; step 1 on the initial weights again (a run without updates gives its loss);
// step 2 on the weights after step 0's update alone (a serial run that skipped step 1's
// batch gives its loss); from step 3 the training differs from the serial update's. Under
// ZeRO 3 the master copy is each rank's shard.
func TestDelayedUpdate(t *testing.T) {
	const mb, T, M, page = 2, 16, 2, 4096
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 1, PP: 1},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3},
	} {
		t.Run(l.String(), func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			l.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
			cfg := trainConfig(6)
			batch := func(s int) [][]int32 {
				micro := make([][]int32, l.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*int64(s)+int64(i))
				}
				return micro
			}
			run := func(tr *trainer, s, data int) float64 {
				loss, _ := tr.step(t, batch(data), Options{Seed: 3, Step: int64(s)})
				return loss
			}
			delayedRun := newTrainer(t, m, net, l, b, cfg)
			for r, ex := range delayedRun.exs {
				if ok, err := ex.SetDelayedUpdate(true); err != nil || !ok {
					t.Fatalf("rank %d: the delayed update does not apply (%v)", r, err)
				}
			}
			var delayedLoss []float64
			for s := range 4 {
				delayedLoss = append(delayedLoss, run(delayedRun, s, s))
			}
			serial := newTrainer(t, m, net, l, b, cfg)
			frozen := newTrainer(t, m, net, l, b, cfg)
			for _, ex := range frozen.exs {
				ex.opt = nil // forward and backward only
			}
			skip := newTrainer(t, m, net, l, b, cfg)
			var serialLoss []float64
			for s := range 4 {
				serialLoss = append(serialLoss, run(serial, s, s))
			}
			run(frozen, 0, 0)
			run(skip, 0, 0)
			want := []float64{serialLoss[0], run(frozen, 1, 1), run(skip, 2, 2)}
			for s, w := range want {
				if delayedLoss[s] != w {
					t.Errorf("step %d: loss %v with the delayed update, want %v", s, delayedLoss[s], w)
				}
			}
			if delayedLoss[3] == serialLoss[3] {
				t.Errorf("step 3: the delayed update trains as the serial one (%v)", delayedLoss[3])
			}
			t.Logf("losses: delayed %v, serial %v", delayedLoss, serialLoss)
			// Tensors read the master weights: after a settle, turning the delay off leaves
			// them in the arena.
			for _, ex := range delayedRun.exs {
				if err := ex.Settle(); err != nil {
					t.Fatal(err)
				}
				k := ex.host.weightAt[0].buf
				master := append([]float32(nil), ex.weights(k)...)
				if ok, err := ex.SetDelayedUpdate(false); err != nil || ok {
					t.Fatal(ok, err)
				}
				for j := range master {
					if ex.f32[k][j] != master[j] {
						t.Fatalf("%s[%d] = %v after the delay ends, the master holds %v", ex.p.Buffers[k].Name, j, ex.f32[k][j], master[j])
					}
				}
				if ex.opt.StepCount() != 4 {
					t.Errorf("%d updates counted after the delay ends, want 4", ex.opt.StepCount())
				}
			}
		})
	}
}
