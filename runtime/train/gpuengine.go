package train

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// gpuEngine trains the layout's step programs through moec's generated CUDA
// (runtime/gpu), every rank in this process (rank r on device r, the collectives through
// NCCL), or under mpirun (Options.Comm) this process's rank alone (on the device of its
// node-local rank, its communicators' NCCL ids exchanged over MPI: gpu.OpenRank): on GPUs (--device
// cuda) or on the CPU under the CUDA emulation (--device cuda-emulated). The step engine's
// executors keep a host copy of each rank's persistent buffers (weights and AdamW moments,
// at the same arena offsets as the device's): checkpoints (assembled from the ranks'
// copies as the CPU engine assembles them; under mpirun collectively, rank 0 writing),
// validation and the memory report read them, refreshed from the devices when a step ran
// since, and loads write them and then the devices. Under mpirun the step's loss terms
// are summed over the processes as the CPU engine sums them.
type gpuEngine struct {
	*stepEngine
	ranks *gpu.Ranks
	// stale says the device ran steps the host copy has not seen.
	stale bool
}

// newGPUEngine opens the generated step of spec's stage on opt.Device.
func newGPUEngine(spec *Spec, cfg optim.Config, opt Options) (*gpuEngine, error) {
	mode, err := gpu.ParseMode(opt.Device)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "--device")
	}
	l := Sharding{Ranks: 1, EP: 1, Program: true}
	if opt.Layout != nil {
		l = *opt.Layout
		l.Program = true
	}
	se, err := newStepEngine(spec, cfg, l, opt)
	if err != nil {
		return nil, err
	}
	o := gpu.Options{Mode: mode, BF16: bf16Products(spec), FP16: fp16Products(spec)}
	var ranks *gpu.Ranks
	if opt.Comm != nil {
		ranks, err = gpu.OpenRank(context.Background(), se.lc.Progs, spec.Model, o, opt.Comm)
	} else {
		ranks, err = gpu.OpenRanks(context.Background(), se.lc.Progs, spec.Model, o)
	}
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot train %s on --device %s", spec.Model.Name, opt.Device)
	}
	for _, s := range ranks.Sessions {
		s.SetOptimizer(cfg)
	}
	e := &gpuEngine{stepEngine: se, ranks: ranks}
	// The engine has no close: the device memory goes back when the engine is collected
	// (or the process ends).
	runtime.AddCleanup(e, func(rs *gpu.Ranks) { rs.Close() }, ranks)
	if err := e.toDevice(); err != nil {
		return nil, err
	}
	return e, nil
}

// persistent calls f for each buffer of each rank that outlives a step (weights,
// gradients, moments; under the offloaded optimizer the master weights and moments in
// the host arena too) with the rank's session and its executor's view of the buffer.
func (e *gpuEngine) persistent(f func(s *gpu.Session, b *step.Buffer, view []float32) error) error {
	for r, s := range e.ranks.Sessions {
		ex := e.lc.Ranks[r]
		for i, b := range s.Buffers() {
			if !b.Kind.Persistent() {
				continue
			}
			if v := ex.Buffer(i); v != nil {
				if err := f(s, b, v); err != nil {
					return fmt.Errorf("train: rank %d: %s: %w", r, b.Name, err)
				}
			}
		}
	}
	return nil
}

func (e *gpuEngine) toDevice() error {
	e.stale = false
	return e.persistent(func(s *gpu.Session, b *step.Buffer, v []float32) error { return s.UploadBuffer(b, v) })
}

func (e *gpuEngine) fromDevice() error {
	if !e.stale {
		return nil
	}
	e.stale = false
	return e.persistent(func(s *gpu.Session, b *step.Buffer, v []float32) error { return s.DownloadBuffer(b, v) })
}

func (e *gpuEngine) step(stepN int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error) {
	B, T, M := spec.MicroBatch, spec.SeqLen, spec.Accum
	// Replica r's micro-batches, as the CPU engine takes them (stepEngine.step).
	micro := make([][]int32, e.layout.DP*M)
	for r := 0; r < e.layout.DP; r++ {
		for m := 0; m < M; m++ {
			toks, err := corpus.Batch(spec.Seed, stepN, m*B+r*e.mb, e.mb, T)
			if err != nil {
				return StepRecord{}, optim.StepInfo{}, err
			}
			micro[r*M+m] = toks
		}
	}
	if err := e.fillTeacherLogits(micro, spec.Seed, stepN); err != nil {
		return StepRecord{}, optim.StepInfo{}, fmt.Errorf("train: step %d: %w", stepN+1, err)
	}
	e.assembled, e.stale = false, true
	o := gpu.StepOptions{Seed: spec.Seed, Step: stepN}
	if e.loss != nil {
		o.LossScale = e.loss.Scale // fp16: the step engine's dynamic loss scaler (fp16.go)
	}
	st, err := e.ranks.Step(micro, o)
	e.steps++
	rec := StepRecord{Loss: st.Loss, CE: st.CE, Balance: st.Balance, ZLoss: st.ZLoss, Dropped: st.Dropped, SoftLoss: st.Distill}
	info := optim.StepInfo{LR: st.LR, GradNorm: st.GradNorm}
	if spec.Train != nil {
		info.Clipped = spec.Train.Optimizer.ClipNorm > 0 && st.GradNorm > spec.Train.Optimizer.ClipNorm
	}
	if err == nil && e.loss != nil {
		err = e.scaleStep(&rec, &info, st.Skipped, e.optStep())
	}
	if err != nil {
		err = fmt.Errorf("train: step %d: %w", stepN+1, err)
		if _, diverged := errors.AsType[*optim.NonFiniteError](err); diverged {
			err = &updateError{err} // an overflow at the smallest loss scale: a diverged run (E0613)
		}
		return rec, info, err
	}
	return rec, info, nil
}

// fillTeacherLogits gives a distillation stage's step the teacher's logits of each of its
// micro-batches (every replica's in turn, as step takes them): each rank's executor runs
// its teacher (runtime/exec's Teacher, the CPU engine's very path) into its
// teacher_logits inputs, which are uploaded into the device arena as the program's other
// buffers are. The teacher runs on the CPU; a later step can run it on the device as a
// second generated program (its forward-only evaluation program).
func (e *gpuEngine) fillTeacherLogits(micro [][]int32, seed, stepN int64) error {
	for r, s := range e.ranks.Sessions {
		ex := e.lc.Ranks[r]
		if !ex.Distills() {
			continue
		}
		filled, err := ex.FillTeacherLogits(micro, exec.Options{Seed: seed, Step: stepN})
		if err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
		bufs := s.Buffers()
		for _, i := range filled {
			if err := s.UploadBuffer(bufs[i], ex.Buffer(i)); err != nil {
				return fmt.Errorf("rank %d: uploading %s: %w", r, bufs[i].Name, err)
			}
		}
	}
	return nil
}

func (e *gpuEngine) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	if err := e.fromDevice(); err != nil {
		return nil, nil, err
	}
	return e.stepEngine.tensors()
}

func (e *gpuEngine) optStep() int64 { return e.ranks.Sessions[0].Updates() }

func (e *gpuEngine) load(model, moments []safetensors.Tensor, stepN int64) error {
	if err := e.stepEngine.load(model, moments, stepN); err != nil {
		return err
	}
	if moments != nil {
		for _, s := range e.ranks.Sessions {
			s.SetUpdates(stepN)
		}
	}
	return e.toDevice()
}

func (e *gpuEngine) initialise(newNet NewNetFunc, spec *Spec, fill func([]*nn.Param) error) error {
	if err := e.stepEngine.initialise(newNet, spec, fill); err != nil {
		return err
	}
	return e.toDevice()
}

func (e *gpuEngine) evalNet(newNet NewNetFunc, spec *Spec) (Net, error) {
	if err := e.fromDevice(); err != nil {
		return nil, err
	}
	return e.stepEngine.evalNet(newNet, spec)
}
