package train

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestStepProgramCache trains through step programs under the unified cache, at the
// smallest device budget the step runs in (named by the E0511 refusal of a smaller one),
// on one rank and at tp 2: the losses and gradient norms equal the step programs' without
// the cache, the device tier reported is within the budget and below the run without the
// cache, and the host tier holds the parameters, gradients and optimizer states.
func TestStepProgramCache(t *testing.T) {
	p := shardProgram(4)
	for _, l := range []Sharding{
		{Ranks: 1, EP: 1, Program: true},
		{Ranks: 2, EP: 1, TP: 2},
	} {
		t.Run(fmt.Sprintf("tp%d", max(l.TP, 1)), func(t *testing.T) {
			ref, _, refMem := trainLayoutMem(t, p, &l)
			small := l
			small.Cache = &CacheConfig{Budget: 1, Page: 4096, Eviction: "lru"}
			_, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &small, ValWindows: 4})
			var le *step.LayoutError
			if !errors.As(err, &le) || le.Budget == nil || diag.CodeOf(err) != diag.CodeCacheBudget {
				t.Fatalf("a one-byte budget: %v", err)
			}
			cached := l
			cached.Cache = &CacheConfig{Budget: le.Budget.Need, Page: 4096, Eviction: "lru"}
			recs, _, mem := trainLayoutMem(t, p, &cached)
			for i := range ref {
				a, b := ref[i], recs[i]
				if !close(a.Loss, b.Loss, 1e-6) || !close(a.GradNorm, b.GradNorm, 1e-5) {
					t.Fatalf("step %d: loss %.9f grad norm %.7f with the cache; %.9f %.7f without", a.Step, b.Loss, b.GradNorm, a.Loss, a.GradNorm)
				}
			}
			var device, without, host int64
			for c := range dist.NumComponents {
				device += mem[0].Measured[dist.Device][c]
				without += refMem[0].Measured[dist.Device][c]
				host += mem[0].Measured[dist.Host][c]
			}
			if device > cached.Cache.Budget || without <= cached.Cache.Budget {
				t.Errorf("device tier %d bytes with a budget of %d, %d without the cache", device, cached.Cache.Budget, without)
			}
			if h := mem[0].Measured[dist.Host]; h[dist.Params] == 0 || h[dist.Grads] == 0 || h[dist.Optimizer] != 2*h[dist.Params] {
				t.Errorf("host tier: %v", h)
			}
			if mem[0].CacheMisses == 0 || mem[0].CacheEvictions == 0 {
				t.Errorf("cache counts: %+v", mem[0])
			}
			t.Logf("budget %d: device %d (without the cache %d), host %d; %d hits, %d misses, %d evictions; final loss %.7f (%.7f without)",
				cached.Cache.Budget, device, without, host, mem[0].CacheHits, mem[0].CacheMisses, mem[0].CacheEvictions, recs[len(recs)-1].Loss, ref[len(ref)-1].Loss)
		})
	}
}

// TestStepProgramCacheOverlap trains through the unified cache with the asynchronous host
// update (the default) and with the serial one: every step's loss and gradient norm, and
// the final checkpoint (written after the last update lands), are bit-equal.
func TestStepProgramCacheOverlap(t *testing.T) {
	p := shardProgram(4)
	l := Sharding{Ranks: 1, EP: 1, Program: true, Cache: &CacheConfig{Budget: 2452800, Page: 4096, Eviction: "lru"}} // the smallest budget the step runs in
	run := func(serial bool) ([]StepRecord, map[string][]float32) {
		res, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &l, ValWindows: 4, SerialHostUpdate: serial})
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
		return recs, w
	}
	want, wantW := run(true)
	got, gotW := run(false)
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d steps with the overlap, %d without", len(got), len(want))
	}
	for i := range want {
		if got[i].Loss != want[i].Loss || got[i].GradNorm != want[i].GradNorm {
			t.Fatalf("step %d: loss %v grad norm %v with the overlap, %v %v without", want[i].Step, got[i].Loss, got[i].GradNorm, want[i].Loss, want[i].GradNorm)
		}
	}
	for name, w := range wantW {
		for j := range w {
			if gotW[name][j] != w[j] {
				t.Fatalf("checkpoint %s[%d]: %v with the overlap, %v without", name, j, gotW[name][j], w[j])
			}
		}
	}
}
