package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/train"
)

// TestShardedRunsMatchSingleRank runs the tiny curriculum's MoE stage on the hand-written
// engine sharded over two ranks, as `mpirun -np 2 moec run …` (one rank per process through Open MPI, which
// scripts/deps.sh installs) and as `moec run --ranks 2` with the unified cache, and holds
// each loss curve to the same stage run as one rank.
func TestShardedRunsMatchSingleRank(t *testing.T) {
	if testing.Short() {
		t.Skip("builds moec and starts processes")
	}
	bin := moecCommand(t)
	base := singleRankRun(t, bin)
	t.Run("mpirun", func(t *testing.T) {
		mpirun, err := exec.LookPath("mpirun")
		if err != nil {
			t.Skip("mpirun not found (Debian: openmpi-bin)")
		}
		shardedRunMatchesSingle(t, bin, base, func(args ...string) (string, []string) {
			return mpirun, append([]string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "2", bin}, args...)
		})
	})
	t.Run("ranks", func(t *testing.T) {
		out := shardedRunMatchesSingle(t, bin, base, func(args ...string) (string, []string) {
			return bin, append(args, "--ranks", "2", "--cache-budget", "2MiB")
		})
		for _, want := range []string{"memory per rank (2 ranks, ep 2, zero 3, unified cache", "optimizer states", "unified cache"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}

// shardedSteps is how many steps the sharded runs and their single-rank baseline train:
// enough for the routing to move and AdamW's moments to matter (a wrong shard of them
// shows in the losses within a few steps); runtime/train's in-process invariance test runs
// 50.
const shardedSteps = 20

// singleRun is the tiny curriculum's MoE stage trained on one rank: the folders it starts
// from and wrote, for the sharded runs to start from and be held to.
type singleRun struct {
	file, root, from, out string
}

// singleRankRun trains the tiny curriculum's dense stage for three steps, then its MoE
// stage for shardedSteps on one rank from there.
func singleRankRun(t *testing.T, bin string) singleRun {
	t.Helper()
	dir := t.TempDir()
	file, err := filepath.Abs("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	r := singleRun{file: file, root: filepath.Join(dir, "out"), out: filepath.Join(dir, "single")}
	runLogged(t, bin, "run", "--stage", "dense", file, "--steps", "3", "--out-root", r.root)
	r.from = train.StageDir(r.root, "hunyuan_tiny", "dense")
	runLogged(t, bin, "run", "--stage", "four", file, "--steps", fmt.Sprint(shardedSteps), "--out-root", r.root, "--from", r.from, "--out", r.out)
	return r
}

// runLogged runs name with args (Open MPI told to yield and copy through shared memory) and
// returns its output; a failure fails the test with it.
func runLogged(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// shardedRunMatchesSingle trains the MoE stage as the command launch builds, from base's
// dense checkpoint, and compares its log step by step and its last checkpoint with base's
// single-rank run; it returns the sharded run's output.
func shardedRunMatchesSingle(t *testing.T, bin string, base singleRun, launch func(args ...string) (string, []string)) string {
	t.Helper()
	const nSteps = shardedSteps
	steps, file, root, from, single := fmt.Sprint(nSteps), base.file, base.root, base.from, base.out
	dir := t.TempDir()
	sharded := filepath.Join(dir, "sharded")
	// The hand-written engine routes the global batch, so a sharded run computes what one
	// rank computes; step programs route per data-parallel replica, as Megatron does
	// (TestStepProgramsUnderMpirun holds them to their own in-process run).
	name, args := launch("run", "--stage", "four", file, "--steps", steps, "--out-root", root, "--from", from, "--out", sharded, "--collective-timeout", "1m", "--engine", "handwritten")
	out := runLogged(t, name, args...)
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

// TestStepProgramsUnderMpirun trains the tiny curriculum's MoE stage through step programs
// with one rank per process under mpirun — tp 2 on two processes, tp 2 × pp 2 on four, and
// dp 2 with ZeRO-1 (--step-programs) on two — and holds every step's loss and the final weights to the same layout's in-process run
// (1e-5 relative). The tp 2 run then loses its last checkpoint and resumes under mpirun
// from the one before, under the layout its run.json records, with the same losses.
func TestStepProgramsUnderMpirun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds moec and starts processes")
	}
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun not found (Debian: openmpi-bin)")
	}
	dir := t.TempDir()
	bin := moecCommand(t)
	// The example without what step programs do not lower at tp × pp: talking heads,
	// shared attention weights and token-embedding routing.
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for _, r := range [][2]string{
		{"talking_heads = true", "talking_heads = false"},
		{"share_weights = 0.5", "share_weights = 1"},
		{"router          = token_embedding", "router          = hidden"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("examples/hunyuan_tiny.moe no longer says %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	file := filepath.Join(dir, "tiny.moe")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	runCmd := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		t.Logf("%s %s: %s", filepath.Base(name), strings.ReplaceAll(strings.Join(args, " "), dir+string(filepath.Separator), ""), time.Since(start).Round(time.Millisecond))
		return string(out)
	}
	onMpirun := func(np int, args ...string) []string {
		return append([]string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", fmt.Sprint(np), bin}, args...)
	}
	root := filepath.Join(dir, "out")
	runCmd(bin, "run", "--stage", "dense", file, "--steps", "3", "--out-root", root)
	from := train.StageDir(root, "hunyuan_tiny", "dense")
	const nSteps = 10
	sameRun := func(t *testing.T, wantDir, gotDir string) {
		t.Helper()
		want, err := train.ReadLog(filepath.Join(wantDir, train.LogFile))
		if err != nil {
			t.Fatal(err)
		}
		got, err := train.ReadLog(filepath.Join(gotDir, train.LogFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != nSteps || len(want) != nSteps {
			t.Fatalf("%d steps under mpirun, %d in-process, want %d", len(got), len(want), nSteps)
		}
		for i := range want {
			if d := math.Abs(got[i].Loss - want[i].Loss); d > 1e-5*math.Abs(want[i].Loss) || got[i].Dropped != want[i].Dropped {
				t.Errorf("step %d: loss %.7f dropped %d under mpirun, %.7f %d in-process", i+1, got[i].Loss, got[i].Dropped, want[i].Loss, want[i].Dropped)
			}
		}
		wantW, gotW := finalWeights(t, wantDir), finalWeights(t, gotDir)
		if len(gotW) != len(wantW) {
			t.Fatalf("%d tensors under mpirun, %d in-process", len(gotW), len(wantW))
		}
		for name, w := range wantW {
			g := gotW[name]
			if len(g) != len(w) {
				t.Fatalf("tensor %s: %d values under mpirun, %d in-process", name, len(g), len(w))
			}
			for i := range w {
				if d := math.Abs(float64(g[i] - w[i])); d > 1e-5*max(1, math.Abs(float64(w[i]))) {
					t.Fatalf("%s[%d] = %g under mpirun, %g in-process", name, i, g[i], w[i])
				}
			}
		}
	}
	for _, tc := range []struct {
		name   string
		np     int
		flags  []string
		resume bool
	}{
		{"tp2", 2, []string{"--tp", "2"}, true},
		{"tp2-pp2", 4, []string{"--tp", "2", "--pp", "2"}, false},
		{"dp2-zero1", 2, []string{"--step-programs", "--ranks", "2", "--zero", "1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := func(out string) []string {
				return append([]string{"run", "--stage", "four", file, "--steps", fmt.Sprint(nSteps), "--checkpoint-every", "5",
					"--out-root", root, "--from", from, "--out", out}, tc.flags...)
			}
			inproc, underMPI := filepath.Join(dir, tc.name+"-inproc"), filepath.Join(dir, tc.name+"-mpirun")
			runCmd(bin, args(inproc)...)
			out := runCmd(mpirun, onMpirun(tc.np, append(args(underMPI), "--collective-timeout", "1m")...)...)
			if want := "step programs"; !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
			sameRun(t, inproc, underMPI)
			if !tc.resume {
				return
			}
			last, err := checkpoint.Latest(filepath.Join(underMPI, train.CheckpointsDir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(last); err != nil {
				t.Fatal(err)
			}
			out = runCmd(mpirun, onMpirun(tc.np, "run", "--resume", underMPI, "--collective-timeout", "1m")...)
			if !strings.Contains(out, "at step 5/10") {
				t.Errorf("the resumed run does not say it resumed at step 5:\n%s", out)
			}
			sameRun(t, inproc, underMPI)
		})
	}
}
