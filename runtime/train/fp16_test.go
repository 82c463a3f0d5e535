package train

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// fp16Program is tinyProgram with one stage of steps steps, its products in precision
// (CPUProducts: "" for float32).
func fp16Program(precision program.Precision, experts int, steps int64) *program.Program {
	p := tinyProgram()
	tr := p.Trains["tiny"]
	if precision != "" {
		tr.Precision, tr.CPUProducts = precision, precision
	}
	tr.Stages = []*program.Stage{{Name: "s", Experts: experts, Steps: steps}}
	return p
}

// TestFP16TrainingFollowsFP32 trains the tiny MoE model 40 steps through step programs
// with float32 products and again with half products under loss scaling (from 2¹⁶, apex's
// start, which this model's gradients never overflow), on one rank and on two ZeRO-1
// replicas: every fp16 step's loss is finite and within 0.5% of the float32 run's, the
// last ten steps' mean within 0.25%, and the runs differ (the products did round). The
// bound: a half keeps 11 significant bits against bfloat16's 8, so each product's operand
// rounding is 8× smaller than in bf16 training, which holds 2% and 1% here
// (TestBF16TrainingFollowsFP32); a quarter of bf16's bounds leaves twice the margin.
func TestFP16TrainingFollowsFP32(t *testing.T) {
	t.Logf("F16C on this CPU: %v", blas.FP16Convert())
	const steps = 40
	for _, c := range []struct {
		name   string
		layout Sharding
	}{
		{"one rank", Sharding{Ranks: 1, EP: 1, Program: true}},
		{"dp2 zero1", Sharding{Ranks: 2, EP: 1, ZeRO: 1, Program: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			losses := map[program.Precision][]StepRecord{}
			for _, prec := range []program.Precision{"", program.FP16} {
				dir := t.TempDir()
				l := c.layout
				res, err := Run(context.Background(), Options{Program: fp16Program(prec, 4, steps), OutDir: dir, ValWindows: 2, Layout: &l, InitialLossScale: 1 << 16})
				if err != nil {
					t.Fatal(err)
				}
				if prec == program.FP16 && (res.LossScale != 1<<16 || res.SkippedSteps != 0) {
					t.Errorf("fp16 run: loss scale %v, %d steps skipped; want 2¹⁶ and none", res.LossScale, res.SkippedSteps)
				}
				if losses[prec], err = ReadLog(filepath.Join(dir, LogFile)); err != nil || len(losses[prec]) != steps {
					t.Fatalf("precision %q: %d logged steps (%v), want %d", prec, len(losses[prec]), err, steps)
				}
			}
			fp32, fp16 := losses[""], losses[program.FP16]
			same := true
			var tail32, tail16 float64
			for i := range fp32 {
				a, b := fp32[i].Loss, fp16[i].Loss
				if math.IsNaN(b) || math.IsInf(b, 0) || math.Abs(b-a) > 0.005*a {
					t.Errorf("step %d: fp16 loss %.5f, float32 %.5f: more than 0.5%% apart", i+1, b, a)
				}
				if fp16[i].LossScale != 1<<16 || fp32[i].LossScale != 0 {
					t.Errorf("step %d: loss scale %v (float32 run %v), want 2¹⁶ (none)", i+1, fp16[i].LossScale, fp32[i].LossScale)
				}
				same = same && a == b
				if i >= steps-10 {
					tail32 += a / 10
					tail16 += b / 10
				}
			}
			if math.Abs(tail16-tail32) > 0.0025*tail32 {
				t.Errorf("last ten steps: fp16 mean loss %.5f, float32 %.5f: more than 0.25%% apart", tail16, tail32)
			}
			if same {
				t.Error("the fp16 run's losses are the float32 run's: the products did not round")
			}
			t.Logf("loss at step 1: %.6f (float32 %.6f); last ten steps' mean %.6f (float32 %.6f)", fp16[0].Loss, fp32[0].Loss, tail16, tail32)
		})
	}
}

// TestFP16OverflowBacksOff starts an fp16 run at a loss scale of 2⁴⁰, which overflows
// half where the backward's products round the scaled gradients: the first steps are
// skipped (logged, the optimizer not counting them), the first overflow only uses up
// the hysteresis, each later one halves the scale, and once it fits training proceeds —
// no error, the loss falls, and the summary counts the skipped steps; under the unified
// cache the asynchronous update skips the same steps and trains as the serial one.
func TestFP16OverflowBacksOff(t *testing.T) {
	const steps = 40
	dir := t.TempDir()
	res, err := Run(context.Background(), Options{Program: fp16Program(program.FP16, 1, steps), OutDir: dir, ValWindows: 2,
		Layout: &Sharding{Ranks: 1, EP: 1, Program: true}, InitialLossScale: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil || len(recs) != steps {
		t.Fatalf("%d records (%v)", len(recs), err)
	}
	if !recs[0].Skipped || !recs[1].Skipped || recs[0].LossScale != 1<<40 || recs[1].LossScale != 1<<40 || recs[2].LossScale != 1<<39 {
		t.Fatalf("first steps: skipped %v %v at scales %v %v %v; want both skipped at 2⁴⁰, then 2³⁹", recs[0].Skipped, recs[1].Skipped, recs[0].LossScale, recs[1].LossScale, recs[2].LossScale)
	}
	var skipped int64
	firstClean := -1
	for i, r := range recs {
		if r.Skipped {
			skipped++
			if r.GradNorm != 0 {
				t.Errorf("step %d: skipped with a gradient norm %v", i+1, r.GradNorm)
			}
		} else if firstClean < 0 {
			firstClean = i
		}
		if i > 0 && r.LossScale > recs[i-1].LossScale {
			t.Errorf("step %d: the scale grew from %v to %v within the growth interval", i+1, recs[i-1].LossScale, r.LossScale)
		}
	}
	if firstClean < 0 || firstClean > steps-10 {
		t.Fatalf("first step that trained: %d of %d", firstClean+1, steps)
	}
	if res.SkippedSteps != skipped || res.LossScale != recs[steps-1].LossScale {
		t.Errorf("summary: %d skipped at scale %v; the log has %d, last scale %v", res.SkippedSteps, res.LossScale, skipped, recs[steps-1].LossScale)
	}
	if !strings.Contains(res.String(), fmt.Sprintf("fp16 loss scale %s, %d steps skipped for overflow", formatLossScale(res.LossScale), skipped)) {
		t.Errorf("summary line %q does not report the skipped steps", res.String())
	}
	c, err := checkpoint.Load(res.Checkpoint, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Manifest.Optimizer; got.Step != steps-skipped || got.LossScale == nil || got.LossScale.Skipped != skipped || got.LossScale.Scale != res.LossScale {
		t.Errorf("checkpoint: optimizer step %d, loss scale %+v; want %d updates, %d skipped at %v", got.Step, got.LossScale, steps-skipped, skipped, res.LossScale)
	}
	if last, first := recs[steps-1].Loss, recs[firstClean].Loss; !(last < first) {
		t.Errorf("loss %v at the last step, %v at the first trained: not falling", last, first)
	}
	t.Logf("%d steps skipped, training from step %d at scale %v, loss %.4f → %.4f", skipped, firstClean+1, recs[firstClean].LossScale, recs[firstClean].Loss, recs[steps-1].Loss)

	// Under the unified cache the update runs on a helper goroutine while the next step
	// fetches its units: a skipped step starts no update there, and the run is the one
	// whose update runs inside each step (SerialHostUpdate), step for step.
	cached := map[bool][]StepRecord{}
	for _, serial := range []bool{false, true} {
		dir := t.TempDir()
		if _, err := Run(context.Background(), Options{Program: fp16Program(program.FP16, 1, steps), OutDir: dir, ValWindows: 2, SerialHostUpdate: serial,
			Layout: &Sharding{Ranks: 1, EP: 1, Program: true, Cache: &CacheConfig{Budget: 6 << 20}}, InitialLossScale: 1 << 40}); err != nil {
			t.Fatal(err)
		}
		if cached[serial], err = ReadLog(filepath.Join(dir, LogFile)); err != nil || len(cached[serial]) != steps {
			t.Fatalf("unified cache (serial %v): %d records (%v)", serial, len(cached[serial]), err)
		}
	}
	for i, a := range cached[false] {
		b := cached[true][i]
		if a.Loss != b.Loss || a.Skipped != b.Skipped || a.LossScale != b.LossScale || a.Skipped != recs[i].Skipped {
			t.Errorf("step %d under the unified cache: loss %v skipped %v scale %v; the serial update %v %v %v (without the cache skipped %v)", i+1, a.Loss, a.Skipped, a.LossScale, b.Loss, b.Skipped, b.LossScale, recs[i].Skipped)
		}
	}
}

// TestFP16ResumeIsExact stops an fp16 run at its checkpoint of step 4 — whose scaler has
// seen overflows (a lowered scale, a used-up hysteresis) — resumes it, and holds every
// step and the final weights to the uninterrupted run's: the scaler's state travels in
// the checkpoint (a resume from the initial scale would skip steps the first run trained).
func TestFP16ResumeIsExact(t *testing.T) {
	const steps = 8
	root := t.TempDir()
	layout := func() *Sharding { return &Sharding{Ranks: 1, EP: 1, Program: true} }
	program := func() *program.Program {
		p := fp16Program(program.FP16, 1, steps)
		p.Trains["tiny"].CheckpointEvery = 4
		return p
	}
	const initial = 1 << 24
	ref, err := Run(context.Background(), Options{Program: program(), OutDir: filepath.Join(root, "ref"), ValWindows: 2, Layout: layout(), InitialLossScale: initial})
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadLog(ref.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	// From 2²⁴ the first three steps overflow (the hysteresis, then two halvings), and
	// an overflow after the resume backs off at once: the hysteresis stays used up.
	if !want[0].Skipped || want[3].Skipped || want[3].LossScale >= initial {
		t.Fatalf("the reference run's first steps (skipped %v at %v … %v at %v) do not exercise the scaler", want[0].Skipped, want[0].LossScale, want[3].Skipped, want[3].LossScale)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := false
	part, err := Run(ctx, Options{Program: program(), OutDir: filepath.Join(root, "stopped"), ValWindows: 2, Layout: layout(), InitialLossScale: initial,
		CheckpointHook: func(point string) {
			if point == "renamed" && !stopped {
				stopped = true
				cancel()
			}
		}})
	if err == nil || !part.Stopped || part.Steps != 4 {
		t.Fatalf("stopped run: %+v, %v", part, err)
	}
	resumed, err := Run(context.Background(), Options{Resume: part.Dir, ValWindows: 2, Layout: layout()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadLog(resumed.LogPath)
	if err != nil || len(got) != steps {
		t.Fatalf("resumed log: %d records, %v", len(got), err)
	}
	for i := range want {
		if got[i].Loss != want[i].Loss || got[i].LossScale != want[i].LossScale || got[i].Skipped != want[i].Skipped || got[i].GradNorm != want[i].GradNorm {
			t.Errorf("step %d: loss %v scale %v skipped %v norm %v after the resume; uninterrupted %v %v %v %v", i+1,
				got[i].Loss, got[i].LossScale, got[i].Skipped, got[i].GradNorm, want[i].Loss, want[i].LossScale, want[i].Skipped, want[i].GradNorm)
		}
	}
	if resumed.LossScale != ref.LossScale || resumed.SkippedSteps != ref.SkippedSteps {
		t.Errorf("resumed: scale %v, %d skipped; uninterrupted %v, %d", resumed.LossScale, resumed.SkippedSteps, ref.LossScale, ref.SkippedSteps)
	}
	w, g := finalWeightsOf(t, ref.Checkpoint), finalWeightsOf(t, resumed.Checkpoint)
	for name, ws := range w {
		for j := range ws {
			if math.Float32bits(g[name][j]) != math.Float32bits(ws[j]) {
				t.Fatalf("%s[%d] = %v after the resume, %v uninterrupted", name, j, g[name][j], ws[j])
			}
		}
	}
}

// TestFP16Refusals: the engines that cannot scale the loss refuse an fp16 block by name
// instead of training it in float32.
func TestFP16Refusals(t *testing.T) {
	for _, c := range []struct {
		name string
		opt  Options
		want string
	}{
		{"hand-written", Options{}, "hand-written engine"},
		{"hand-written sharded", Options{Layout: &Sharding{Ranks: 2, EP: 1}}, "hand-written engine"},
	} {
		opt := c.opt
		opt.Program, opt.OutDir = fp16Program(program.FP16, 1, 2), t.TempDir()
		_, err := Run(context.Background(), opt)
		if diag.CodeOf(err) != diag.CodeBadRunOption || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "precision = fp16") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestFP16Note: `moec run` says how an fp16 block's products round on this CPU, and
// nothing for other precisions.
func TestFP16Note(t *testing.T) {
	if note := FP16Note(&program.Train{Precision: program.FP16}); note != "" {
		t.Errorf("a block whose fp16 is not written for the CPU got %q", note)
	}
	if note := FP16Note(&program.Train{Precision: program.BF16, CPUProducts: program.BF16}); note != "" {
		t.Errorf("a bf16 block got %q", note)
	}
	note := FP16Note(&program.Train{Precision: program.FP16, CPUProducts: program.FP16})
	if !strings.Contains(note, "IEEE half") || !strings.Contains(note, "loss scaling") || strings.Contains(note, "F16C") != blas.FP16Convert() {
		t.Errorf("fp16 note %q (F16C %v)", note, blas.FP16Convert())
	}
}

// TestLossScalerFollowsMegatron steps the scaler through Megatron-Core's
// DynamicGradScaler rules: hysteresis 2, backoff ½, growth ×2 after the interval of clean
// steps (which restores the hysteresis), never below 1.
func TestLossScalerFollowsMegatron(t *testing.T) {
	s := newLossScaler(0)
	if s.Scale != 1<<32 || s.Hysteresis != 2 {
		t.Fatalf("default start %+v", s.LossScaleState)
	}
	s = newLossScaler(8)
	s.update(true) // the hysteresis absorbs the first overflow
	if s.Scale != 8 || s.Hysteresis != 1 {
		t.Fatalf("after one overflow: %+v", s.LossScaleState)
	}
	s.update(true)
	s.update(false)
	s.update(true) // the hysteresis stays used up until a growth
	if s.Scale != 2 || s.Skipped != 3 || s.CleanSteps != 0 {
		t.Fatalf("after three overflows: %+v", s.LossScaleState)
	}
	for range LossScaleGrowthInterval {
		s.update(false)
	}
	if s.Scale != 4 || s.Hysteresis != 2 || s.CleanSteps != 0 {
		t.Fatalf("after a growth interval: %+v", s.LossScaleState)
	}
	for range 5 {
		s.update(true)
	}
	if s.Scale != 1 {
		t.Fatalf("the scale went below 1: %+v", s.LossScaleState)
	}
	if err := s.restore(&checkpoint.LossScaleState{Scale: 0.5, Hysteresis: 1}); err == nil {
		t.Error("restore took a scale below 1")
	}
	if err := s.restore(nil); err == nil {
		t.Error("restore took a checkpoint without a loss scale")
	}
}
