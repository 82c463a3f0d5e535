package exec

import (
	"fmt"
	"sync"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
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
// weights and moments at the end, are bit-equal, and every step hands each unit's update
// to the helper (the counter is zero with the overlap removed).
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

// TestHostOverlapWaitsForEachUnit holds the helper back until the rank blocks on the unit
// it updates next, so that every fetch of the next step finds its unit's update pending:
// the step must wait for each (the waits are counted) and still train bit-equal to the
// serial update. Without the waits the forward would read weights one update old.
func TestHostOverlapWaitsForEachUnit(t *testing.T) {
	const mb, T, M, steps, page = 2, 16, 2, 3, 4096
	m := hunyuanTiny(t, 8)
	net, err := nn.New(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	l.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
	cfg := trainConfig(steps)
	serial := newTrainer(t, m, net, l, b, cfg)
	async := newTrainer(t, m, net, l, b, cfg)
	ex := async.exs[0]
	if ok, err := ex.SetHostOverlap(true); err != nil || !ok {
		t.Fatalf("the overlap does not apply (%v)", err)
	}
	h := ex.host
	units := len(h.units)
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	released := 0 // units the rank has asked for
	var timeline []string
	h.waiting = func(need int) {
		mu.Lock()
		released = max(released, need)
		timeline = append(timeline, fmt.Sprintf("wait %d", need))
		cond.Broadcast()
		mu.Unlock()
	}
	h.beforeUnit = func(u int) {
		mu.Lock()
		for released <= u {
			cond.Wait()
		}
		timeline = append(timeline, fmt.Sprintf("update %d", u))
		if u == units-1 {
			released = 0 // the next step's update starts over
		}
		mu.Unlock()
	}
	want := overlapRun(t, serial, m, 1, M, mb, T, steps)
	got := overlapRun(t, async, m, 1, M, mb, T, steps)
	for s := range want {
		if w, g := want[s][0], got[s][0]; w.Loss != g.Loss || w.GradNorm != g.GradNorm {
			t.Errorf("step %d: loss %v norm %v with the held-back update, %v and %v without", s, g.Loss, g.GradNorm, w.Loss, w.GradNorm)
		}
		// Steps after the first find the previous update pending: a fetch waits for each
		// unit (the head's fetch also waits for the last).
		if g := got[s][0]; s > 0 && g.UpdateWaits < units-1 {
			t.Errorf("step %d waited %d times for %d units: %v", s, g.UpdateWaits, units, timeline)
		}
	}
	sameState(t, serial, async)
	mu.Lock()
	defer mu.Unlock()
	// The timeline: each update follows a wait that asked for it.
	asked := 0
	for _, ev := range timeline {
		var n int
		if _, err := fmt.Sscanf(ev, "wait %d", &n); err == nil {
			asked = max(asked, n)
			continue
		}
		fmt.Sscanf(ev, "update %d", &n)
		if n >= asked {
			t.Fatalf("unit %d updated before the rank asked for it: %v", n, timeline)
		}
		if n == units-1 {
			asked = 0
		}
	}
}

// TestDelayedUpdate trains through the unified cache with the one-step-delayed update and
// checks which weights each step ran on: step 0 on the initial weights, as the serial
// update; step 1 on the initial weights again (a run without updates gives its loss);
// step 2 on the weights after step 0's update alone (a serial run that skipped step 1's
// batch gives its loss); from step 3 the training differs from the serial update's.
func TestDelayedUpdate(t *testing.T) {
	const mb, T, M, page = 2, 16, 2, 4096
	m := hunyuanTiny(t, 8)
	net, err := nn.New(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	l.Cache = step.Cache{Budget: smallestBudget(t, m, b, l, page), Page: page}
	cfg := trainConfig(6)
	batch := func(s int) [][]int32 {
		micro := make([][]int32, M)
		for i := range micro {
			micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*int64(s)+int64(i))
		}
		return micro
	}
	run := func(tr *trainer, s, data int) Stats {
		st, err := tr.exs[0].Run(batch(data), Options{Seed: 3, Step: int64(s)})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	delayedRun := newTrainer(t, m, net, l, b, cfg)
	if ok, err := delayedRun.exs[0].SetDelayedUpdate(true); err != nil || !ok {
		t.Fatalf("the delayed update does not apply (%v)", err)
	}
	var delayedLoss []float64
	for s := range 4 {
		delayedLoss = append(delayedLoss, run(delayedRun, s, s).Loss)
	}
	serial := newTrainer(t, m, net, l, b, cfg)
	frozen := newTrainer(t, m, net, l, b, cfg)
	frozen.exs[0].opt = nil // forward and backward only
	skip := newTrainer(t, m, net, l, b, cfg)
	var serialLoss []float64
	for s := range 4 {
		serialLoss = append(serialLoss, run(serial, s, s).Loss)
	}
	run(frozen, 0, 0)
	run(skip, 0, 0)
	want := []float64{serialLoss[0], run(frozen, 1, 1).Loss, run(skip, 2, 2).Loss}
	for s, w := range want {
		if delayedLoss[s] != w {
			t.Errorf("step %d: loss %v with the delayed update, want %v", s, delayedLoss[s], w)
		}
	}
	if delayedLoss[3] == serialLoss[3] {
		t.Errorf("step 3: the delayed update trains as the serial one (%v)", delayedLoss[3])
	}
	t.Logf("losses: delayed %v, serial %v", delayedLoss, serialLoss)
	// Tensors read the master weights: after a settle, turning the delay off leaves them
	// in the arena.
	ex := delayedRun.exs[0]
	if err := ex.Settle(); err != nil {
		t.Fatal(err)
	}
	k := ex.host.weightBuf[0]
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
