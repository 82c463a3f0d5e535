package exec

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/pyvenv"
)

// distillCase is one distillation loss to compute: n rows of V logits of the student and
// the teacher, the targets, and the loss's temperature and weights.
type distillCase struct {
	N, V          int
	Student       []float32
	Teacher       []float32
	Targets       []int32
	T, Soft, Hard float64
}

func newDistillCase(n, V int, d step.Distill, seed uint64) distillCase {
	r := rand.New(rand.NewPCG(seed, 7))
	c := distillCase{N: n, V: V, Student: make([]float32, n*V), Teacher: make([]float32, n*V), Targets: make([]int32, n),
		T: d.Temperature, Soft: d.SoftWeight, Hard: d.HardWeight}
	for i := range c.Student {
		c.Student[i] = float32(2 * r.NormFloat64())
		c.Teacher[i] = float32(3 * r.NormFloat64())
	}
	for i := range c.Targets {
		c.Targets[i] = int32(r.IntN(V))
	}
	return c
}

// distillKernels are kernels whose step spans one micro-batch of one replica (the loss's
// scale is 1).
func distillKernels(t *testing.T) *Kernels {
	t.Helper()
	m := hunyuanTiny(t, 1)
	k, err := NewKernels(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// run computes the case's loss (from the kernel's float64 terms) and the logits' gradient.
func (c distillCase) run(k *Kernels, student []float32) (float64, []float32) {
	k.BeginStep(1, 0)
	loss, dl := make([]float32, 1), make([]float32, len(student))
	d := step.Distill{Temperature: c.T, SoftWeight: c.Soft, HardWeight: c.Hard}
	k.DistillLoss(student, c.Targets, c.Teacher, loss, dl, c.V, d)
	st := k.Stats()
	return c.Hard*st.CE + c.Soft*st.Distill, dl
}

// TestDistillLossAgainstTorch: the loss and the logits' gradient equal PyTorch's
// hard·cross_entropy + soft·T²·kl_div(log_softmax(s/T), log_softmax(t/T), batchmean),
// differentiated by autograd.
func TestDistillLossAgainstTorch(t *testing.T) {
	py := pyvenv.Python(t, "../..", "torch")
	k := distillKernels(t)
	for _, d := range []step.Distill{
		{Temperature: 2, SoftWeight: 0.5, HardWeight: 0.5},
		{Temperature: 1, SoftWeight: 1, HardWeight: 0},
		{Temperature: 4, SoftWeight: 0.9, HardWeight: 0.1},
	} {
		c := newDistillCase(6, 50, d, 3)
		loss, dl := c.run(k, c.Student)
		in := filepath.Join(t.TempDir(), "case.json")
		b, _ := json.Marshal(c)
		if err := os.WriteFile(in, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(py, "-c", torchDistill, in).CombinedOutput()
		if err != nil {
			t.Fatalf("torch: %v\n%s", err, out)
		}
		var want struct {
			Loss float64
			Grad []float32
		}
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatalf("torch's output %q: %v", out, err)
		}
		if math.Abs(loss-want.Loss) > 1e-6*math.Abs(want.Loss) { // the cross-entropy sums its exponentials in float32 lanes
			t.Errorf("%s: loss %.12f, torch %.12f", d, loss, want.Loss)
		}
		if e := relErr(dl, want.Grad); e > 1e-5 {
			t.Errorf("%s: gradient differs from torch's by %.2g (relative)", d, e)
		}
	}
}

// torchDistill computes a distillCase's loss and gradient in float64 with autograd.
const torchDistill = `
import json, sys, torch
import torch.nn.functional as F
c = json.load(open(sys.argv[1]))
s = torch.tensor(c["Student"], dtype=torch.float64).reshape(c["N"], c["V"]).requires_grad_()
t = torch.tensor(c["Teacher"], dtype=torch.float64).reshape(c["N"], c["V"])
y = torch.tensor(c["Targets"], dtype=torch.long)
T = c["T"]
kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), reduction="batchmean", log_target=True)
loss = c["Hard"] * F.cross_entropy(s, y) + c["Soft"] * T * T * kl
loss.backward()
print(json.dumps({"Loss": loss.item(), "Grad": s.grad.reshape(-1).tolist()}))
`

// TestDistillLossGradient: the gradient the kernel writes is the derivative of the loss it
// reports, by central differences.
func TestDistillLossGradient(t *testing.T) {
	k := distillKernels(t)
	d := step.Distill{Temperature: 3, SoftWeight: 0.6, HardWeight: 0.4}
	c := newDistillCase(4, 17, d, 5)
	_, dl := c.run(k, c.Student)
	x := append([]float32(nil), c.Student...)
	numeric := make([]float32, len(x))
	const h = 1e-2
	for i := range x {
		orig := x[i]
		x[i] = orig + h
		up, _ := c.run(k, x)
		hi := x[i]
		x[i] = orig - h
		down, _ := c.run(k, x)
		lo := x[i]
		x[i] = orig
		numeric[i] = float32((up - down) / float64(hi-lo))
	}
	if e := relErr(dl, numeric); e > 1e-3 {
		t.Errorf("gradient differs from central differences by %.2g (relative)", e)
	}
}

// TestDistillLossWithoutSoftIsCrossEntropy: with soft_weight 0 and hard_weight 1 the
// loss and its gradient are cross_entropy's, bit for bit.
func TestDistillLossWithoutSoftIsCrossEntropy(t *testing.T) {
	k := distillKernels(t)
	c := newDistillCase(8, 256, step.Distill{Temperature: 2, SoftWeight: 0, HardWeight: 1}, 9)
	_, dl := c.run(k, c.Student)
	loss := make([]float32, 1)
	k.DistillLoss(c.Student, c.Targets, c.Teacher, loss, dl, c.V, step.Distill{Temperature: 2, SoftWeight: 0, HardWeight: 1})
	k.BeginStep(1, 0)
	ceLoss, ceGrad := make([]float32, 1), make([]float32, len(dl))
	k.CrossEntropy(c.Student, c.Targets, nil, nil, ceLoss, ceGrad, c.V, 0)
	if loss[0] != ceLoss[0] {
		t.Errorf("loss %v, cross_entropy's %v", loss[0], ceLoss[0])
	}
	for i := range dl {
		if dl[i] != ceGrad[i] {
			t.Fatalf("gradient[%d] = %v, cross_entropy's %v", i, dl[i], ceGrad[i])
		}
	}
}
