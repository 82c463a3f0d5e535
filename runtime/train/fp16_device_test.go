package train

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// fp16DeviceScale is the loss scale TestFP16OnEmulatedDeviceFollowsStepPrograms starts
// from: the tiny dense model's scaled gradients overflow half there for its first steps,
// until the scaler's backoff brings the scale under what they need.
const fp16DeviceScale = 1 << 22

// TestFP16OnEmulatedDeviceFollowsStepPrograms trains the tiny dense model with precision
// = fp16 from a loss scale its gradients overflow, through step programs on the CPU and
// through the generated CUDA under the emulation (--device cuda-emulated): both skip the
// same steps, run each step at the same scale (the step engine's dynamic loss scaler
// drives both), and agree on every loss within 1e-5, and on the weights after the four
// updates within 5e-4 relative (1.6e-4 measured: half products round their operands, so
// a last-bit difference upstream, fp32 sums in another order, flips an occasional
// rounding, which Adam's normalisation at lr 3e-3 magnifies). On request
// (MOEC_LONG_EMULATION=1: the emulated tensor-core products take minutes).
func TestFP16OnEmulatedDeviceFollowsStepPrograms(t *testing.T) {
	longtest.Require(t, "minutes of emulated tensor-core steps; make test stays under ten minutes")
	if cuda.FindClang() == "" {
		t.Skip("no clang++ on PATH: the emulated CUDA step needs clang 16 or newer")
	}
	const steps = 6
	run := func(device string) ([]StepRecord, *checkpoint.Checkpoint) {
		t.Helper()
		dir := t.TempDir()
		res, err := Run(context.Background(), Options{Program: fp16Program(program.FP16, 1, steps), OutDir: dir, ValWindows: 2,
			Layout: &Sharding{Ranks: 1, EP: 1, Program: true}, InitialLossScale: fp16DeviceScale, Device: device})
		if err != nil {
			t.Fatalf("device %q: %v", device, err)
		}
		recs, err := ReadLog(filepath.Join(dir, LogFile))
		if err != nil || len(recs) != steps {
			t.Fatalf("device %q: %d records (%v)", device, len(recs), err)
		}
		c, err := checkpoint.Load(res.Checkpoint, false)
		if err != nil {
			t.Fatal(err)
		}
		return recs, c
	}
	cpu, cpuCkpt := run("")
	emu, emuCkpt := run("cuda-emulated")
	skipped, trained := 0, 0
	for i := range cpu {
		a, b := emu[i], cpu[i]
		t.Logf("step %d: scale %g skipped %v loss %.7f (CPU: %g %v %.7f)", i+1, a.LossScale, a.Skipped, a.Loss, b.LossScale, b.Skipped, b.Loss)
		if a.Skipped != b.Skipped || a.LossScale != b.LossScale {
			t.Errorf("step %d: skipped %v at scale %g on the emulated device, %v at %g on the CPU", i+1, a.Skipped, a.LossScale, b.Skipped, b.LossScale)
		}
		if math.Abs(a.Loss-b.Loss) > 1e-5*b.Loss {
			t.Errorf("step %d: loss %.7f on the emulated device, %.7f on the CPU", i+1, a.Loss, b.Loss)
		}
		if b.Skipped {
			skipped++
		} else {
			trained++
		}
	}
	if skipped == 0 || trained == 0 {
		t.Errorf("%d steps skipped and %d trained: the comparison wants both (change fp16DeviceScale)", skipped, trained)
	}
	if emuCkpt.Manifest.Optimizer.Step != cpuCkpt.Manifest.Optimizer.Step {
		t.Errorf("%d updates on the emulated device, %d on the CPU", emuCkpt.Manifest.Optimizer.Step, cpuCkpt.Manifest.Optimizer.Step)
	}
	want := map[string][]float32{}
	for _, ts := range cpuCkpt.Model {
		want[ts.Name] = ts.Data
	}
	worst := 0.0
	for _, ts := range emuCkpt.Model {
		var num, den float64
		for i, v := range ts.Data {
			d := float64(v) - float64(want[ts.Name][i])
			num += d * d
			den += float64(want[ts.Name][i]) * float64(want[ts.Name][i])
		}
		e := math.Sqrt(num / max(den, 1e-30))
		worst = max(worst, e)
		if e > 5e-4 {
			t.Errorf("%s: relative error %.2g after the run", ts.Name, e)
		}
	}
	t.Logf("largest relative error of a weight after %d updates: %.2g", trained, worst)
}
