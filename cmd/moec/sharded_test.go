package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/train"
)

// TestShardedRunsMatchSingleRank runs the tiny curriculum's MoE stage sharded over two
// ranks, as `mpirun -np 2 moec run …` (one rank per process through Open MPI, which
// scripts/deps.sh installs) and as `moec run --ranks 2` with the unified cache, and holds
// each loss curve to the same stage run as one rank.
func TestShardedRunsMatchSingleRank(t *testing.T) {
	if testing.Short() {
		t.Skip("builds moec and starts processes")
	}
	bin := filepath.Join(t.TempDir(), "moec")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("mpirun", func(t *testing.T) {
		mpirun, err := exec.LookPath("mpirun")
		if err != nil {
			t.Skip("mpirun not found (Debian: openmpi-bin)")
		}
		shardedRunMatchesSingle(t, bin, func(args ...string) (string, []string) {
			return mpirun, append([]string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "2", bin}, args...)
		})
	})
	t.Run("ranks", func(t *testing.T) {
		out := shardedRunMatchesSingle(t, bin, func(args ...string) (string, []string) {
			return bin, append(args, "--ranks", "2", "--cache-budget", "2MiB")
		})
		for _, want := range []string{"memory per rank (2 ranks, ep 2, zero 3, unified cache", "optimizer states", "unified cache"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}

// shardedRunMatchesSingle trains the tiny curriculum's MoE stage on one rank and as the
// command launch builds, and compares the logs step by step; it returns the sharded
// run's output.
func shardedRunMatchesSingle(t *testing.T, bin string, launch func(args ...string) (string, []string)) string {
	t.Helper()
	dir := t.TempDir()
	const nSteps = 50 // as the in-process invariance tests run
	steps := fmt.Sprint(nSteps)
	file, err := filepath.Abs("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := filepath.Join(dir, "out")
	runCmd := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	runCmd(bin, "run", "--stage", "dense", file, "--steps", "3", "--out-root", root)
	from := train.StageDir(root, "hunyuan_tiny", "dense")
	single := filepath.Join(dir, "single")
	runCmd(bin, "run", "--stage", "four", file, "--steps", steps, "--out-root", root, "--from", from, "--out", single)
	sharded := filepath.Join(dir, "sharded")
	name, args := launch("run", "--stage", "four", file, "--steps", steps, "--out-root", root, "--from", from, "--out", sharded, "--collective-timeout", "1m")
	out := runCmd(name, args...)
	want, err := train.ReadLog(filepath.Join(single, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := train.ReadLog(filepath.Join(sharded, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) != nSteps {
		t.Fatalf("%d steps sharded, %d on one rank", len(got), len(want))
	}
	for i := range want {
		if d := got[i].Loss - want[i].Loss; d > 2e-4 || d < -2e-4 || got[i].Dropped != want[i].Dropped {
			t.Errorf("step %d: loss %.6f dropped %d sharded, %.6f %d on one rank", i+1, got[i].Loss, got[i].Dropped, want[i].Loss, want[i].Dropped)
		}
	}
	// The final weights, as each run's last checkpoint holds them.
	wantW, gotW := finalWeights(t, single), finalWeights(t, sharded)
	for name, w := range wantW {
		g := gotW[name]
		if len(g) != len(w) {
			t.Fatalf("tensor %s: %d values sharded, %d on one rank", name, len(g), len(w))
		}
		for i := range w {
			if d := g[i] - w[i]; d > 1e-3 || d < -1e-3 {
				t.Fatalf("%s[%d] = %g sharded, %g on one rank", name, i, g[i], w[i])
			}
		}
	}
	return out
}

func finalWeights(t *testing.T, runDir string) map[string][]float32 {
	t.Helper()
	dir, err := train.ResolveCheckpoint(runDir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, ts := range c.Model {
		out[ts.Name] = ts.Data
	}
	return out
}
