package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// shardProgram is the tiny MoE program with one MoE stage of the given steps, a top-2
// router with capacity (so layouts must agree on which assignments drop) and a z-loss.
func shardProgram(steps int64) *program.Program {
	p := tinyProgram()
	m := p.Models["tiny"]
	m.MoE.TopK, m.MoE.CapacityFactor, m.MoE.ZLoss = 2, 1.0, 1e-3
	tr := p.Trains["tiny"]
	tr.MicroBatch, tr.TokensPerBatch = 8, 512 // two micro-batches of 8 sequences of 32
	tr.CheckpointEvery = 0
	tr.Stages = []*program.Stage{{Name: "moe", Experts: 4, Steps: steps}}
	return p
}

// TestLayoutInvariance trains the same stage under every layout the runtime executes for
// 1, 2 and 4 ranks and holds each to the single rank: the same losses, balance loss,
// gradient norms and drops at every step, and the same final weights.
func TestLayoutInvariance(t *testing.T) {
	steps := int64(50)
	if testing.Short() {
		steps = 12
	}
	p := shardProgram(steps)
	ref, refW := trainLayout(t, p, nil)
	layouts := []Sharding{
		{Ranks: 2, EP: 1, ZeRO: 0},
		{Ranks: 2, EP: 2, ZeRO: 0},
		{Ranks: 2, EP: 2, ZeRO: 3},
		{Ranks: 4, EP: 2, ZeRO: 1},
		{Ranks: 4, EP: 4, ZeRO: 2},
		{Ranks: 4, EP: 2, ZeRO: 3},
		{Ranks: 4, EP: 1, ZeRO: 2, Offload: true},
		{Ranks: 4, EP: 4, ZeRO: 3, Offload: true},
		{Ranks: 2, EP: 2, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 160 << 10, Page: 16 << 10, Eviction: "lru"}},
		{Ranks: 4, EP: 2, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 96 << 10, Page: 8 << 10, Eviction: "lfu"}},
		{Ranks: 2, EP: 1, ZeRO: 3, Offload: true, Cache: &CacheConfig{Budget: 1 << 20, Page: 64 << 10, Eviction: "fifo"}},
	}
	for _, l := range layouts {
		name := fmt.Sprintf("ranks%d-ep%d-zero%d-offload%v", l.Ranks, l.EP, l.ZeRO, l.Offload)
		if l.Cache != nil {
			name += "-cache-" + l.Cache.Eviction
		}
		t.Run(name, func(t *testing.T) {
			recs, w, mem := trainLayoutMem(t, p, &l)
			if l.Cache != nil {
				m := mem[0]
				if m.CacheHits == 0 || m.CacheMisses == 0 {
					t.Errorf("cache: %d hits, %d misses; the case should have both", m.CacheHits, m.CacheMisses)
				}
				if l.Cache.Budget < 1<<20 && m.CacheEvictions == 0 {
					t.Error("cache: nothing evicted under a small budget")
				}
				if got := m.Measured[dist.Device][dist.Params]; got > l.Cache.Budget {
					t.Errorf("cached pages peaked at %d bytes over the %d budget", got, l.Cache.Budget)
				}
				t.Logf("cache: %d hits, %d misses, %d evictions", m.CacheHits, m.CacheMisses, m.CacheEvictions)
			}
			for i := range ref {
				a, b := ref[i], recs[i]
				if !close(a.Loss, b.Loss, 2e-4) || !close(a.Balance, b.Balance, 2e-4) || !close(a.GradNorm, b.GradNorm, 2e-3) || a.Dropped != b.Dropped {
					t.Fatalf("step %d: loss %.6f balance %.6f grad norm %.5f dropped %d; single rank %.6f %.6f %.5f %d",
						a.Step, b.Loss, b.Balance, b.GradNorm, b.Dropped, a.Loss, a.Balance, a.GradNorm, a.Dropped)
				}
			}
			if ref[0].Dropped == 0 {
				t.Error("the case is meant to drop assignments")
			}
			worst := worstWeightDiff(t, refW, w)
			if worst > 2e-3 {
				t.Errorf("final weights differ from the single rank's by up to %g", worst)
			}
			t.Logf("worst final weight difference %.2g after %d steps", worst, steps)
		})
	}
}

func close(a, b, rel float64) bool { return math.Abs(a-b) <= rel*math.Max(1, math.Abs(a)) }

// trainLayout runs the program's stage under l (nil: one rank) and returns its log and
// final weights.
// worstWeightDiff is the largest absolute difference between the single rank's final
// weights and a sharded run's, tensor by tensor.
func worstWeightDiff(t *testing.T, single, sharded map[string][]float32) float64 {
	t.Helper()
	var worst float64
	for name, want := range single {
		got := sharded[name]
		if len(got) != len(want) {
			t.Fatalf("tensor %s: %d values, single rank %d", name, len(got), len(want))
		}
		for i := range want {
			worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
		}
	}
	return worst
}

func trainLayout(t *testing.T, p *program.Program, l *Sharding) ([]StepRecord, map[string][]float32) {
	t.Helper()
	recs, w, _ := trainLayoutMem(t, p, l)
	return recs, w
}

func trainLayoutMem(t *testing.T, p *program.Program, l *Sharding) ([]StepRecord, map[string][]float32, []RankMemory) {
	t.Helper()
	res, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: l, ValWindows: 4})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadLog(res.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := checkpoint.Load(res.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	w := map[string][]float32{}
	for _, ts := range c.Model {
		w[ts.Name] = ts.Data
	}
	if l != nil {
		if len(res.Memory) != l.Ranks {
			t.Errorf("memory report for %d ranks, want %d", len(res.Memory), l.Ranks)
		}
	}
	return recs, w, res.Memory
}

// TestCrossLayoutResume writes checkpoints under one layout and continues under another:
// 2 ranks with expert parallelism → 1 rank, and 1 rank → 4 ranks with ZeRO-3. The
// continued run must match the run that never changed layout.
func TestCrossLayoutResume(t *testing.T) {
	p := shardProgram(8)
	p.Trains["tiny"].CheckpointEvery = 4
	whole, _ := trainLayout(t, p, nil)
	for _, c := range []struct {
		name          string
		first, second *Sharding
	}{
		{"ep2-to-1", &Sharding{Ranks: 2, EP: 2}, nil},
		{"1-to-zero3x4", nil, &Sharding{Ranks: 4, EP: 2, ZeRO: 3}},
	} {
		t.Run(c.name, func(t *testing.T) { resumeAcross(t, p, c.first, c.second, whole, 2e-4) })
	}
}

// resumeAcross runs p under first until its step-4 checkpoint is written (then stops, as a
// killed run would), resumes under second, and holds every step's loss to whole (a run
// that never changed layout) within tol, relative.
func resumeAcross(t *testing.T, p *program.Program, first, second *Sharding, whole []StepRecord, tol float64) {
	t.Helper()
	root := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopped bool
	hook := func(point string) {
		if point == "renamed" && !stopped {
			stopped = true
			cancel()
		}
	}
	res, err := Run(ctx, Options{Program: p, OutRoot: root, Layout: first, CheckpointHook: hook, ValWindows: 4})
	if err == nil || !res.Stopped || res.Steps != 5 && res.Steps != 4 {
		t.Fatalf("first run: %+v, %v", res, err)
	}
	res2, err := Run(context.Background(), Options{Program: p, Resume: res.Dir, Layout: second, ValWindows: 4})
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := ReadLog(res2.LogPath)
	if len(recs) != len(whole) {
		t.Fatalf("%d steps logged after the resume, %d without", len(recs), len(whole))
	}
	for i := range whole {
		if !close(whole[i].Loss, recs[i].Loss, tol) {
			t.Fatalf("step %d: loss %.7f after changing layout, %.7f without", i+1, recs[i].Loss, whole[i].Loss)
		}
	}
}

// TestManifestCheck: an assembled checkpoint with a missing, duplicated or mis-shaped
// expert tensor is refused, naming it.
func TestManifestCheck(t *testing.T) {
	m := shardProgram(1).Models["tiny"]
	r, err := newTestRank(m)
	if err != nil {
		t.Fatal(err)
	}
	full, _, err := r.tensors()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkManifest(m, full); err != nil {
		t.Fatalf("the whole model fails its own manifest: %v", err)
	}
	expert := -1
	for i, ts := range full {
		if strings.Contains(ts.Name, ".experts.2.w2.") {
			expert = i
		}
	}
	cases := map[string][]safetensors.Tensor{
		"is missing":     append(append([]safetensors.Tensor(nil), full[:expert]...), full[expert+1:]...),
		"appears twice":  append(append([]safetensors.Tensor(nil), full...), full[expert]),
		"has shape [64]": replaceShape(full, expert, []int{64}),
	}
	for want, ts := range cases {
		err := checkManifest(m, ts)
		if err == nil || !strings.Contains(err.Error(), full[expert].Name) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
		// Loading into ranks checks the same before any rank reads its share.
		g := &group{ranks: []*rank{r}, comms: []dist.Comm{r.world}}
		if err := g.load(ts, nil, 0); err == nil || !strings.Contains(err.Error(), full[expert].Name) {
			t.Errorf("loading a checkpoint whose expert tensor %s: %v", want, err)
		}
	}
}

func replaceShape(ts []safetensors.Tensor, i int, shape []int) []safetensors.Tensor {
	out := append([]safetensors.Tensor(nil), ts...)
	out[i].Shape = shape
	return out
}

func newTestRank(m *program.Model) (*rank, error) {
	comms, err := dist.Local(1, 0)
	if err != nil {
		return nil, err
	}
	p := shardProgram(1)
	return newRank(m, 1, optim.FromProgram(p.Trains["tiny"].Optimizer, 0, 1), comms[0], Sharding{Ranks: 1, EP: 1})
}

// TestCachePolicies checks which unit each eviction policy gives up.
func TestCachePolicies(t *testing.T) {
	for _, c := range []struct {
		policy string
		want   int // the unit evicted when unit 9 arrives
	}{{"lru", 2}, {"lfu", 3}, {"fifo", 1}} {
		uc, err := newUnitCache(CacheConfig{Budget: 3 * 1024, Page: 1024, Eviction: c.policy})
		if err != nil {
			t.Fatal(err)
		}
		// Units 1, 2, 3 fill the pool, then 2 is used twice, 3 and 1 once each: 2 is the
		// least recent (lru), 3 the least used with the older last use (lfu), 1 the first
		// in (fifo).
		for _, u := range []int{1, 2, 3} {
			if uc.Get(u) != nil {
				t.Fatal("hit in an empty cache")
			}
			if ok, _ := uc.put(u, 1000, [2][]float32{}); !ok {
				t.Fatal("unit does not fit")
			}
			uc.Unpin(u)
		}
		for _, u := range []int{2, 2, 3, 1} {
			if uc.Get(u) == nil {
				t.Fatalf("%s: unit %d missed", c.policy, u)
			}
			uc.Unpin(u)
		}
		uc.Get(9)
		ok, ev := uc.put(9, 1000, [2][]float32{})
		if !ok || len(ev) != 1 || ev[0].Unit != c.want {
			t.Errorf("%s: evicted %v, want unit %d", c.policy, ev, c.want)
		}
		// Unit 9 is still pinned: a two-page unit must evict the two others, never 9, and
		// a unit that needs 9's page as well stays out.
		ok, ev = uc.put(10, 2000, [2][]float32{})
		if !ok || len(ev) != 2 || !uc.Holds(9) {
			t.Errorf("%s: caching a two-page unit next to a pinned one: ok %v, evicted %d, unit 9 kept %v", c.policy, ok, len(ev), uc.Holds(9))
		}
		uc.Unpin(10)
		if ok, _ := uc.put(11, 3000, [2][]float32{}); ok {
			t.Errorf("%s: a unit that needs the pinned unit's page was cached", c.policy)
		}
	}
	if _, err := newUnitCache(CacheConfig{Eviction: "random"}); err == nil {
		t.Error("unknown policy accepted")
	}
}

// TestRankFailure: a rank that fails mid-step stops the others with an error naming it,
// and a rank that stalls past the collective timeout makes the others fail naming the op
// and the missing rank; neither hangs.
func TestRankFailure(t *testing.T) {
	p := shardProgram(6)
	for _, c := range []struct {
		name string
		hook func(rank int, step int64) error
		want []string
	}{
		{"dies", func(rank int, step int64) error {
			if rank == 1 && step == 2 {
				return errors.New("out of memory (injected)")
			}
			return nil
		}, []string{"rank 1 step 3", "out of memory (injected)"}},
		{"panics", func(rank int, step int64) error {
			if rank == 2 && step == 1 {
				panic("injected")
			}
			return nil
		}, []string{"rank 2 panicked", "injected"}},
		{"stalls", func(rank int, step int64) error {
			if rank == 3 && step == 1 {
				time.Sleep(1500 * time.Millisecond)
			}
			return nil
		}, []string{"timed out after 300ms", "waiting for rank(s) [3]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), ValWindows: 4,
				Layout: &Sharding{Ranks: 4, EP: 2, ZeRO: 2}, RankHook: c.hook, CollectiveTimeout: 300 * time.Millisecond})
			if err == nil {
				t.Fatal("the run succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %s to stop", d)
			}
			var re *diag.Diagnostic
			if !errors.As(err, &re) || re.Code != diag.CodeRankFailed {
				t.Errorf("error is not %s: %v", diag.CodeRankFailed, err)
			}
			t.Log(err)
		})
	}
}

// TestLayoutInvarianceTiedSharedGate covers what the main invariance test's model lacks: a
// head tied to the embedding (ZeRO-3 gathers the embedding again at the head, and its
// gradient arrives from two places) and a gated shared expert next to routed ones.
func TestLayoutInvarianceTiedSharedGate(t *testing.T) {
	p := shardProgram(6)
	m := p.Models["tiny"]
	m.TieEmbeddings = true
	m.MoE.SharedExperts, m.MoE.SharedGate = 1, true
	ref, refW := trainLayout(t, p, nil)
	for _, l := range []Sharding{{Ranks: 2, EP: 2, ZeRO: 3}, {Ranks: 4, EP: 2, ZeRO: 2, Offload: true}} {
		recs, w := trainLayout(t, p, &l)
		for i := range ref {
			if !close(ref[i].Loss, recs[i].Loss, 2e-4) {
				t.Fatalf("%s: step %d loss %.6f, single rank %.6f", l, i+1, recs[i].Loss, ref[i].Loss)
			}
		}
		for name, want := range refW {
			for i := range want {
				if d := math.Abs(float64(w[name][i] - want[i])); d > 1e-4 {
					t.Fatalf("%s: %s[%d] differs by %g", l, name, i, d)
				}
			}
		}
	}
}

// TestResumeFinishedSharded: resuming a sharded run that has nothing left to train saves
// nothing new, and still assembles its weights to report the validation loss.
func TestResumeFinishedSharded(t *testing.T) {
	p := shardProgram(3)
	l := &Sharding{Ranks: 2, EP: 2, ZeRO: 3}
	res, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: l, ValWindows: 4})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Run(context.Background(), Options{Program: p, Resume: res.Dir, Layout: l, ValWindows: 4})
	if err != nil {
		t.Fatal(err)
	}
	if again.ValLoss != res.ValLoss || again.Steps != 3 {
		t.Errorf("resumed finished run: validation loss %v after %d steps, first run %v", again.ValLoss, again.Steps, res.ValLoss)
	}
}
