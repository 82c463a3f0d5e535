package step

import (
	"errors"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/pagepool"
	"github.com/moec-dev/moec/lang/diag"
)

// needFor is the smallest budget the refusal of a one-byte budget names.
func needFor(t *testing.T, m *program.Model, b Batch, l Layout) int64 {
	t.Helper()
	l.Cache.Budget = 1
	_, err := Lower(m, b, l)
	var le *LayoutError
	if !errors.As(err, &le) || le.Budget == nil {
		t.Fatalf("%s: a one-byte budget lowered: %v", l, err)
	}
	return le.Budget.Need
}

// TestCacheLayoutsVerify lowers hunyuan_tiny under the unified cache at several layouts
// and policies, at the smallest budget that runs and at one that holds every unit: every
// layout verifies (def-before-use, no overlap, the device peak within the budget), the
// small budget fetches more than the large one, and the program without the cache peaks
// above the small budget.
func TestCacheLayoutsVerify(t *testing.T) {
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
	for _, c := range []struct {
		name    string
		experts int
		layout  Layout
	}{
		{"one rank lru", 8, Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: Cache{Page: 4096}}},
		{"one rank lfu", 8, Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: Cache{Page: 4096, Eviction: pagepool.LFU}}},
		{"one rank fifo recompute", 8, Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull, Cache: Cache{Page: 4096, Eviction: pagepool.FIFO}}},
		{"dp2 ep2 zero2", 8, Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 2, Cache: Cache{Page: 4096}}},
		{"dp2 ep2 zero3", 8, Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3, Cache: Cache{Page: 4096}}},
		{"dp4 ep2 zero3", 8, Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3, Cache: Cache{Page: 4096}}},
		{"tp2 dense", 1, Layout{DP: 1, EP: 1, TP: 2, PP: 1, Cache: Cache{Page: 4096}}},
		{"pp2 dense", 1, Layout{DP: 1, EP: 1, TP: 1, PP: 2, Cache: Cache{Page: 4096}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, c.experts)
			if c.layout.TP > 1 || c.layout.PP > 1 {
				// The features tensor and pipeline parallelism do not lower.
				m.Attention.TalkingHeads, m.Attention.ShareWeights = false, 1
				if m.MoE != nil {
					moe := *m.MoE
					moe.Router = program.RouteHidden
					m.MoE = &moe
				}
			}
			plain := c.layout
			plain.Cache = Cache{}
			ref, err := Lower(m, b, plain)
			if err != nil {
				t.Fatal(err)
			}
			var fetched [2]int64
			for k, budget := range []int64{needFor(t, m, b, c.layout), 1 << 30} {
				l := c.layout
				l.Cache.Budget = budget
				progs, err := Lower(m, b, l)
				if err != nil {
					t.Fatalf("budget %d: %v", budget, err)
				}
				if err := VerifyLayout(progs); err != nil {
					t.Fatalf("budget %d: %v", budget, err)
				}
				for r, p := range progs {
					if p.Memory.Peak[Device] > budget {
						t.Errorf("budget %d: rank %d peaks at %d", budget, r, p.Memory.Peak[Device])
					}
					if k == 0 && ref[r].Memory.Peak[Device] <= budget {
						t.Errorf("rank %d peaks at %d without the cache, within the smallest budget %d", r, ref[r].Memory.Peak[Device], budget)
					}
					for _, buf := range p.Buffers {
						if buf.Kind.Persistent() && buf.Tier != Host {
							t.Errorf("%s (%s) is in the %s tier", buf.Name, buf.Kind, buf.Tier)
						}
					}
				}
				fetched[k], _ = CacheMoves(progs[0])
			}
			if fetched[0] <= fetched[1] {
				t.Errorf("the smallest budget fetches %d bytes, a budget for every unit %d", fetched[0], fetched[1])
			}
		})
	}
}

// TestCacheBudgetTooSmall: a budget one byte short of what the step needs is refused
// with E0511 at the stage, naming the unit and the smallest budget, which lowers.
func TestCacheBudgetTooSmall(t *testing.T) {
	m := hunyuanTiny(t, 8)
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}
	l := Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: Cache{Page: 4096}}
	need := needFor(t, m, b, l)
	l.Cache.Budget = need - 1
	_, err := Lower(m, b, l)
	if err == nil {
		t.Fatalf("budget %d (one byte short) lowered", need-1)
	}
	st := &program.Stage{Name: "moe"}
	st.Decl.File = "tiny.moe"
	ds := Diagnose(err, st, "--cache-budget")
	if len(ds) != 1 || ds[0].Code != diag.CodeCacheBudget || ds[0].Subject.File != "tiny.moe" || ds[0].Severity != diag.Error {
		t.Fatalf("diagnostics %v", ds)
	}
	for _, want := range []string{"layer", "page(s) of 4 KiB", "cannot hold"} {
		if !strings.Contains(ds[0].Summary, want) {
			t.Errorf("message %q lacks %q", ds[0].Summary, want)
		}
	}
	if !strings.Contains(ds[0].Suggestion, "--cache-budget") {
		t.Errorf("suggestion %q", ds[0].Suggestion)
	}
	l.Cache.Budget = need
	if _, err := Lower(m, b, l); err != nil {
		t.Errorf("the budget the refusal names, %d: %v", need, err)
	}
}

// TestCacheMutationsAreCaught: dropping a fetch fails Verify (the backward reads device
// copies nothing wrote), and so does a device arena larger than the budget.
func TestCacheMutationsAreCaught(t *testing.T) {
	m := hunyuanTiny(t, 8)
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
	l := Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: Cache{Page: 4096}}
	l.Cache.Budget = needFor(t, m, b, l)
	lower := func() *Program {
		progs, err := Lower(m, b, l)
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(progs[0]); err != nil {
			t.Fatalf("before mutation: %v", err)
		}
		return progs[0]
	}
	for _, c := range []struct {
		name   string
		mutate func(p *Program) bool
	}{
		{"drop a fetch", func(p *Program) bool {
			for i, op := range p.Ops {
				if op.Kind == OpCacheFetch && op.Phase == Backward {
					p.Ops = append(p.Ops[:i:i], p.Ops[i+1:]...)
					return true
				}
			}
			return false
		}},
		{"an arena over the budget", func(p *Program) bool {
			p.Layout.Cache.Budget = p.Memory.Arena[Device] - 1
			return true
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := lower()
			if !c.mutate(p) {
				t.Fatal("nothing to mutate")
			}
			p.Memory = planMemory(p)
			if err := Verify(p); err == nil {
				t.Error("Verify passed")
			}
		})
	}
}
