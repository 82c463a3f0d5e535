package gpu

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	moexec "github.com/moec-dev/moec/runtime/exec"
)

// TestEmulatedCacheMatchesExecutor: hunyuan_tiny's dense stage on one rank under a
// unified cache of 3 MiB in 64 KiB pages (small enough that the step evicts layers and
// fetches them again for the backward) and two micro-batches (the second's write-backs
// add into the host gradients on the CPU): three steps against runtime/exec, the losses,
// norms and weights as matchRanks holds them, then every persistent host buffer (the
// weights and the AdamW moments the CPU updated within 1e-6 relative, the last step's
// gradients within 1e-5: the device's reductions sum in another order than the CPU's, and
// the talking heads' 16-value gradients sum over every token) against the executor's host
// tier. The streams run as late as they may (the emulation's
// default): a kernel that read a copy before its fetch landed, a write-back that copied a
// gradient after a later op overwrote its bytes, or a host update before the write-backs,
// would read wrong values.
func TestEmulatedCacheMatchesExecutor(t *testing.T) {
	if os.Getenv("MOEC_LONG_EMULATION") == "" {
		t.Skip("set MOEC_LONG_EMULATION=1 for this comparison (the step's kernels compiled under the emulation and three steps of two micro-batches: minutes on a loaded machine); cudastep's TestUnifiedCacheHostProgram checks the host program's copies and events by default")
	}
	m, cfg := hunyuanTiny(t, 1)
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: step.Cache{Budget: 3 << 20, Page: 64 << 10}}
	matchRanksThen(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, l, cfg, 3, func(lc *moexec.Local, rs *Ranks) {
		p := lc.Progs[0]
		evictions := 0
		for _, op := range p.Ops {
			if op.Kind == step.OpCacheEvict {
				evictions++
			}
		}
		if evictions == 0 {
			t.Fatal("the program evicts nothing: the budget does not exercise the cache")
		}
		worst, worstName, host := 0.0, "", 0
		for r, s := range rs.Sessions {
			for i, b := range s.Buffers() {
				if b.Tier != step.Host || !b.Kind.Persistent() {
					continue
				}
				host++
				want := lc.Ranks[r].Buffer(i)
				got := make([]float32, b.Elements())
				if err := s.DownloadBuffer(b, got); err != nil {
					t.Fatal(err)
				}
				e := relErr(got, want)
				tol := 1e-6
				if b.Kind == step.KindGrad {
					tol = 1e-5
				} else if e > worst {
					worst, worstName = e, fmt.Sprintf("rank %d's %s", r, b.Name)
				}
				if e > tol || math.IsNaN(e) {
					t.Errorf("rank %d: host buffer %s after the updates: relative error %.2g", r, b.Name, e)
				}
			}
		}
		if host == 0 {
			t.Fatal("no buffer in host memory: the layout does not run the cache")
		}
		t.Logf("%d evictions a step; %d host buffers; largest relative error of a weight or moment %.2g (%s)", evictions, host, worst, worstName)
	})
}
