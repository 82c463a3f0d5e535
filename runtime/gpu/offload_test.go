package gpu

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/internal/longtest"

	"github.com/moec-dev/moec/compiler/step"
	moexec "github.com/moec-dev/moec/runtime/exec"
)

// matchOffload is matchRanks under the offloaded optimizer, then every rank's host arena
// (the master weights and the AdamW moments the CPU updated) against the executor's host
// tier, within tol relative.
func matchOffload(t *testing.T, experts int, l step.Layout, steps int64, tol float64) {
	t.Helper()
	m, cfg := hunyuanTiny(t, experts)
	l.OffloadOpt = true
	matchRanksThen(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, l, cfg, steps, func(lc *moexec.Local, rs *Ranks) {
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
				if e > worst {
					worst, worstName = e, fmt.Sprintf("rank %d's %s", r, b.Name)
				}
				if e > tol || math.IsNaN(e) {
					t.Errorf("rank %d: host buffer %s after the updates: relative error %.2g", r, b.Name, e)
				}
			}
		}
		if host == 0 {
			t.Fatal("no buffer in host memory: the layout does not offload")
		}
		t.Logf("%d host buffers; largest relative error %.2g (%s)", host, worst, worstName)
	})
}

// TestEmulatedOffloadMatchesExecutor: hunyuan_tiny's dense stage on one rank with the
// optimizer offloaded (ZeRO-Offload): the gradients copied into the pinned host arena on
// the copy stream, AdamW on the CPU in the host program with the device's clip scale, the
// weights copied back, three steps against runtime/exec's offloaded update, and the host
// master weights and moments against the executor's host tier. The streams run as late as
// they may (the emulation's default): a CPU update that did not wait for its copy, or a
// step that did not wait for the weights' return, would read stale values.
func TestEmulatedOffloadMatchesExecutor(t *testing.T) {
	longtest.Require(t, "the step's kernels compiled under the emulation and three steps: about two minutes on a loaded machine; TestDeviceBuildOffload and cudastep's TestOffloadedOptimizerHostProgram check the host program by default")
	matchOffload(t, 1, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 3, 1e-6)
}

// TestEmulatedOffloadZeROMatchesExecutor: two data-parallel ranks under ZeRO 1 and 2 with
// the optimizer offloaded: each rank's shard of the gradients to the host (ZeRO 2: the
// reduce-scattered shard), its shard updated on the CPU, back to the device, then the
// shards exchanged.
func TestEmulatedOffloadZeROMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled twice: minutes on a loaded machine")
	for _, zero := range []int{1, 2} {
		t.Run(fmt.Sprintf("zero %d", zero), func(t *testing.T) {
			matchOffload(t, 1, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: zero}, 2, 1e-5)
		})
	}
}

// TestDeviceBuildOffload compiles the host program of an offloaded optimizer for a GPU
// (the libcuda.so.1 filling of the driver table, warnings as errors) and holds the entry
// points it adds: the pinned host arena's, which the Go side looks up when it opens such a
// program.
func TestDeviceBuildOffload(t *testing.T) {
	needClang(t)
	m, _ := hunyuanTiny(t, 1)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, OffloadOpt: true})
	if err != nil {
		t.Fatal(err)
	}
	low, err := cudastep.Lower(progs[0], m)
	if err != nil {
		t.Fatal(err)
	}
	deviceBuildHasHostFuncs(t, low)
}

// deviceBuildHasHostFuncs compiles low's host program for a GPU (the libcuda.so.1 filling
// of the driver table, warnings as errors) and holds it to the entry points the Go side
// looks up when it opens a program with a host arena.
func deviceBuildHasHostFuncs(t *testing.T, low *cudastep.Lowered) {
	t.Helper()
	dir := t.TempDir()
	if err := writeSources(low, dir); err != nil {
		t.Fatal(err)
	}
	so, err := compileHost(context.Background(), dir, cuda.FindClang(), Device)
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(so)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append([]string{"moec_step_train"}, hostFuncs...) {
		if !strings.Contains(string(host), name) {
			t.Errorf("the compiled host program has no %s", name)
		}
	}
}
