package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/train"
)

// TestMPIMatchesSingleRank runs the tiny curriculum's MoE stage as 2 MPI processes
// (`mpirun -np 2 moec run …`, expert parallelism over the processes) and holds its loss
// curve and final weights to the same stage run as one rank. It needs Open MPI's mpirun,
// which scripts/deps.sh installs.
func TestMPIMatchesSingleRank(t *testing.T) {
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun not found (Debian: openmpi-bin)")
	}
	if testing.Short() {
		t.Skip("builds moec and starts MPI processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "moec")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	file, err := filepath.Abs("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := filepath.Join(dir, "out")
	runCmd := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	runCmd(bin, "run", "--stage", "dense", file, "--steps", "3", "--out-root", root)
	from := train.StageDir(root, "hunyuan_tiny", "dense")
	single := filepath.Join(dir, "single")
	runCmd(bin, "run", "--stage", "four", file, "--steps", "5", "--out-root", root, "--from", from, "--out", single)
	sharded := filepath.Join(dir, "mpi")
	runCmd(mpirun, "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "2",
		bin, "run", "--stage", "four", file, "--steps", "5", "--out-root", root, "--from", from, "--out", sharded, "--collective-timeout", "1m")
	want, err := train.ReadLog(filepath.Join(single, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := train.ReadLog(filepath.Join(sharded, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) != 5 {
		t.Fatalf("%d steps under MPI, %d on one rank", len(got), len(want))
	}
	for i := range want {
		if d := got[i].Loss - want[i].Loss; d > 2e-4 || d < -2e-4 || got[i].Dropped != want[i].Dropped {
			t.Errorf("step %d: loss %.6f dropped %d under MPI, %.6f %d on one rank", i+1, got[i].Loss, got[i].Dropped, want[i].Loss, want[i].Dropped)
		}
	}
}
