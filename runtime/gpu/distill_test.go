package gpu

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/step"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// TestEmulatedDistillStepMatchesExecutor: a distillation stage (distill_loss at tp 1,
// kernels_dense.cu's dense_distill) through the generated step under the emulation
// against the executor: a two-layer dense hunyuan_tiny student learning from a teacher of
// the same shape with other weights and a sharpened head (T = 2, soft 0.7, hard 0.3). The teacher runs on the CPU
// (runtime/exec's Teacher) and its logits are uploaded into the step's teacher_logits
// inputs, as runtime/train's GPU engine does; the losses, soft losses and gradient norms
// of two steps agree within 1e-5 (the soft loss relative) and every parameter after the two updates within 1e-5
// relative.
func TestEmulatedDistillStepMatchesExecutor(t *testing.T) {
	needClang(t)
	m, cfg := hunyuanTiny(t, 1)
	m.Layers = 2 // the emulated step's time is its layers'
	b := step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}
	d := step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}
	progs, err := step.Lower(m, b, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Distill: d})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	ex, whole, _ := executorAtInit(t, p, m, cfg)
	tnet, err := nn.New(m, 11)
	if err != nil {
		t.Fatal(err)
	}
	var teacher []safetensors.Tensor
	for _, w := range tnet.Params() {
		if w.Name == "lm_head.weight" {
			// A confident teacher: its soft targets far from the student's near-uniform
			// ones at initialisation, so the soft loss and its gradient weigh.
			for j := range w.W {
				w.W[j] *= 40
			}
		}
		teacher = append(teacher, safetensors.Tensor{Name: w.Name, Shape: w.Shape, Data: w.W})
	}
	if len(teacher) == 0 || !slices.ContainsFunc(teacher, func(w safetensors.Tensor) bool { return w.Name == "lm_head.weight" }) {
		t.Fatal("the teacher has no lm_head.weight to sharpen")
	}
	tc, err := moexec.NewTeacher(m, b.MicroBatch, b.SeqLen, teacher)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.SetTeacher(tc); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s, err := Open(context.Background(), p, m, Options{Mode: Emulated, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("generated and compiled in %v", time.Since(start))
	if err := s.LoadParams(ex.Param); err != nil {
		t.Fatal(err)
	}
	s.SetOptimizer(cfg)
	d0, _ := m.Dims()
	for stepN := int64(0); stepN < 2; stepN++ {
		micro := [][]int32{randomTokens(b.MicroBatch, b.SeqLen, d0.V, 100*stepN)}
		o := moexec.Options{Seed: 5, Step: stepN}
		// The teacher's logits for the device, as the GPU engine fills them.
		filled, err := ex.FillTeacherLogits(micro, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(filled) != 1 {
			t.Fatalf("the teacher filled %d buffers, want the one micro-batch's", len(filled))
		}
		for _, i := range filled {
			if err := s.UploadBuffer(p.Buffers[i], ex.Buffer(i)); err != nil {
				t.Fatal(err)
			}
		}
		want, err := ex.Run(micro, o)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		got, err := s.Step(micro, StepOptions{Seed: 5, Step: stepN})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d in %v: loss %.7f (executor %.7f), soft loss %.7f (%.7f), cross-entropy %.7f (%.7f), gradient norm %.7f (%.7f)",
			stepN, time.Since(start), got.Loss, want.Loss, got.Distill, want.Distill, got.CE, want.CE, got.GradNorm, want.GradNorm)
		if want.Distill <= 0 {
			t.Fatalf("step %d: the executor's soft loss is %g: the teacher should disagree with the student", stepN, want.Distill)
		}
		for _, c := range []struct {
			what      string
			got, want float64
		}{{"loss", got.Loss, want.Loss}, {"soft loss", got.Distill / want.Distill, 1}, {"cross-entropy", got.CE, want.CE}, {"gradient norm", got.GradNorm, want.GradNorm}} {
			if math.Abs(c.got-c.want) > 1e-5*max(1, math.Abs(c.want)) {
				t.Errorf("step %d: %s %.8f, the executor's %.8f", stepN, c.what, c.got, c.want)
			}
		}
	}
	worst, worstID := paramsAgree(t, "", whole, 1e-5, ex.Param, s.Param)
	t.Logf("largest relative error of a parameter after the updates: %.2g (%s)", worst, worstID)
}
