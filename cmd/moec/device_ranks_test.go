package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// TestDeviceCudaRanksWithoutDriver: on a machine without the NVIDIA driver and NCCL,
// run --device cuda on two ranks stops before it reads anything, naming both libraries.
func TestDeviceCudaRanksWithoutDriver(t *testing.T) {
	if gpu.CheckDriver() == nil || gpu.CheckNCCL() == nil {
		t.Skip("this machine has the NVIDIA driver or NCCL")
	}
	deviceFixture(t)
	args := []string{"run", "--device", "cuda", "--ranks", "2", "--stage", "dense", "--steps", "1", "tiny.moe"}
	var out, errb bytes.Buffer
	if st := run(args, &out, &errb); st != 1 {
		t.Errorf("%s: status %d, want 1\n%s", strings.Join(args, " "), st, errb.String())
	}
	for _, want := range []string{"libcuda.so.1", "libnccl.so.2", "2 ranks", "cuda-emulated"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("the message does not say %q:\n%s", want, errb.String())
		}
	}
	if _, err := os.Stat("out"); err == nil {
		t.Error("the run wrote a run folder")
	}
}

// TestDeviceCudaEmulatedTrainsRanks: --device cuda-emulated on two ranks, data-parallel
// (the plan's ZeRO 1, and ZeRO 3: the weights gathered from the ranks' shards before each
// use) and two pipeline stages (--pp 2: the activations and their gradients sent between
// the stages), trains every rank through its generated CUDA step (the collectives through
// the emulated NCCL), with the CPU step engine's losses on the same ranks, and writes the
// checkpoint assembled from the ranks' host copies.
func TestDeviceCudaEmulatedTrainsRanks(t *testing.T) {
	if cuda.FindClang() == "" {
		t.Skip("no clang++ on PATH: the emulated CUDA step needs clang 16 or newer")
	}
	longtest.Require(t, "two ranks' generated steps compiled: most of a minute a layout")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"dp2", nil},
		{"dp2 zero3", []string{"--zero", "3"}},
		{"pp2", []string{"--pp", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) { emulatedRanksMatchCPU(t, c.args...) })
	}
}

// emulatedRanksMatchCPU trains the device fixture's dense stage for two steps on two ranks
// laid out by args, on the CPU step engine and on the emulated devices, and holds the
// losses and the last checkpoints together.
func emulatedRanksMatchCPU(t *testing.T, args ...string) {
	deviceFixture(t)
	losses := func(dir string, more ...string) []float64 {
		t.Helper()
		return runStageLosses(t, dir, append(append([]string{"--steps", "2", "--ranks", "2"}, args...), more...)...)
	}
	want := losses("cpu", "--engine", "step")
	got := losses("emu", "--device", "cuda-emulated")
	if len(got) != 2 || len(want) != 2 {
		t.Fatalf("losses %v on the emulated devices, %v on the CPU: want 2 steps each", got, want)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-5*math.Abs(want[i]) {
			t.Errorf("step %d: loss %.7f on the emulated devices, %.7f on the CPU", i+1, got[i], want[i])
		}
	}
	t.Logf("losses %v (CPU %v)", got, want)
	sameCheckpoint(t, "cpu", "emu")
}

// sameCheckpoint holds the last checkpoint of the run in emuDir (the emulated devices')
// to the one in cpuDir (the CPU's): every tensor within 1e-5 relative (root mean square).
func sameCheckpoint(t *testing.T, cpuDir, emuDir string) {
	t.Helper()
	cpu, err1 := filepath.Glob(filepath.Join(cpuDir, "checkpoints", "*", "model.safetensors"))
	emu, err2 := filepath.Glob(filepath.Join(emuDir, "checkpoints", "*", "model.safetensors"))
	if err1 != nil || err2 != nil || len(emu) == 0 || len(emu) != len(cpu) {
		t.Fatalf("checkpoints %v on the emulated devices, %v on the CPU", emu, cpu)
	}
	// The last checkpoint's weights, assembled from the ranks' host copies, are the CPU's.
	fc, err := safetensors.ReadFile(cpu[len(cpu)-1])
	if err != nil {
		t.Fatal(err)
	}
	fe, err := safetensors.ReadFile(emu[len(emu)-1])
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range fc.Tensors {
		g, ok := fe.Get(w.Name)
		if !ok || len(g.Data) != len(w.Data) {
			t.Errorf("the emulated devices' checkpoint has no %s of %d values", w.Name, len(w.Data))
			continue
		}
		var num, den float64
		for i := range w.Data {
			d := float64(g.Data[i]) - float64(w.Data[i])
			num, den = num+d*d, den+float64(w.Data[i])*float64(w.Data[i])
		}
		if num > 1e-10*max(den, 1e-12) {
			t.Errorf("%s: relative error %.2g against the CPU's checkpoint", w.Name, math.Sqrt(num/max(den, 1e-12)))
		}
	}
}
