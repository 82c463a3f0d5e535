package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/longtest"
)

// TestDeviceCudaEmulatedUnderMpirun: `mpirun -np 2 moec run --device cuda-emulated`
// runs one rank per process, each its own generated CUDA step on its emulated device, the
// NCCL unique ids exchanged over MPI and the collectives meeting in the emulated NCCL's
// shared memory; the losses are the CPU step engine's on the same layout in one process,
// and the checkpoint rank 0 writes holds the same weights; the communicators' files are
// gone. Under MOEC_LONG_EMULATION=1 (make test-long): dp 2, pp 2 and tp 2, each also
// run emulated in one process and wanted with the very same losses, bit for bit, and dp 2
// resumed under mpirun.
func TestDeviceCudaEmulatedUnderMpirun(t *testing.T) {
	longtest.Require(t, "builds moec and starts two processes that compile their host programs: half a minute to two; codegen/cudastep's TestEmulatedNCCLAcrossProcesses holds the emulated NCCL across processes by default")
	if testing.Short() {
		t.Skip("builds moec and starts processes")
	}
	if cuda.FindClang() == "" {
		t.Skip("no clang++ on PATH: the emulated CUDA step needs clang 16 or newer")
	}
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun not found (Debian: openmpi-bin)")
	}
	if os.Getenv("OMPI_COMM_WORLD_SIZE") != "" {
		t.Skip("already running under mpirun; a nested mpirun would join this job")
	}
	bin := moecCommand(t)
	long := longtest.On()
	cases := []struct {
		name string
		args []string
	}{{"dp2", []string{"--ranks", "2"}}}
	if long {
		cases = append(cases, struct {
			name string
			args []string
		}{"pp2", []string{"--ranks", "2", "--pp", "2"}}, struct {
			name string
			args []string
		}{"tp2", []string{"--ranks", "2", "--tp", "2"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			deviceFixture(t)
			want := runStageLosses(t, "cpu", append([]string{"--steps", "2", "--checkpoint-every", "1", "--engine", "step"}, c.args...)...)
			start := time.Now()
			out := mpirunMoec(t, mpirun, append([]string{bin, "run", "--stage", "dense", "--out", "emu", "--steps", "2", "--checkpoint-every", "1",
				"--device", "cuda-emulated", "--collective-timeout", "1m"}, append(c.args, "tiny.moe")...)...)
			t.Logf("mpirun -np 2 moec run --device cuda-emulated %s: %s", strings.Join(c.args, " "), time.Since(start).Round(time.Millisecond))
			got := logLosses(t, "emu")
			if len(got) != 2 || len(want) != 2 {
				t.Fatalf("losses %v under mpirun on the emulated devices, %v on the CPU: want 2 steps each\n%s", got, want, out)
			}
			for i := range got {
				if math.Abs(got[i]-want[i]) > 1e-5*math.Abs(want[i]) {
					t.Errorf("step %d: loss %.7f under mpirun on the emulated devices, %.7f on the CPU in one process", i+1, got[i], want[i])
				}
			}
			t.Logf("losses %v (CPU %v)", got, want)
			sameCheckpoint(t, "cpu", "emu")
			if !long {
				return
			}
			if c.name == "dp2" {
				// Resumed under mpirun from step 1's checkpoint, the weights and moments
				// loaded into each process's device: the same second step, bit for bit.
				ckpts, err := filepath.Glob(filepath.Join("emu", "checkpoints", "*"))
				if err != nil || len(ckpts) != 2 {
					t.Fatalf("checkpoints %v (%v): want one a step", ckpts, err)
				}
				if err := os.RemoveAll(ckpts[len(ckpts)-1]); err != nil {
					t.Fatal(err)
				}
				out = mpirunMoec(t, mpirun, bin, "run", "--resume", "emu", "--device", "cuda-emulated", "--collective-timeout", "1m")
				if !strings.Contains(out, "at step 1/2") {
					t.Errorf("the resumed run does not say it resumed at step 1:\n%s", out)
				}
				resumed := logLosses(t, "emu")
				t.Logf("resumed at step 1: losses %v", resumed)
				if len(resumed) != 2 || resumed[1] != got[1] {
					t.Errorf("losses %v resumed under mpirun, %v uninterrupted: want the same second step\n%s", resumed, got, out)
				}
			}
			// The same ranks emulated in one process: the same kernels, the same sums.
			inproc := runStageLosses(t, "emu-inproc", append([]string{"--steps", "2", "--device", "cuda-emulated"}, c.args...)...)
			for i := range inproc {
				if i >= len(got) || got[i] != inproc[i] {
					t.Errorf("losses %v under mpirun, %v emulated in one process: want them equal", got, inproc)
					break
				}
			}
		})
	}
}

// mpirunMoec runs args (the moec binary and its arguments) on two processes under mpirun
// and returns the output; a failure fails the test with it, and so does an emulated NCCL
// communicator file left behind (they go once the ranks have joined).
func mpirunMoec(t *testing.T, mpirun string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args = append([]string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "2"}, args...)
	cmd := exec.CommandContext(ctx, mpirun, args...)
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "OMPI_MCA_btl_vader_single_copy_mechanism=none", "OMPI_MCA_mpi_yield_when_idle=1",
		"MOEC_EMU_NCCL_TIMEOUT=120", "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mpirun %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "moec-nccl-*")); len(left) > 0 {
		t.Errorf("the run left %v behind", left)
	}
	return string(out)
}
