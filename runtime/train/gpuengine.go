package train

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/gpu"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// gpuEngine trains one rank's step program through moec's generated CUDA (runtime/gpu):
// on a GPU (--device cuda) or on the CPU under the CUDA emulation (--device
// cuda-emulated). The step engine's executor keeps a host copy of the persistent buffers
// (weights and AdamW moments, at the same arena offsets as the device's): checkpoints,
// validation and the memory report read it, refreshed from the device when a step ran
// since, and loads write it and then the device.
type gpuEngine struct {
	*stepEngine
	sess *gpu.Session
	// stale says the device ran steps the host copy has not seen.
	stale bool
}

// newGPUEngine opens the generated step of spec's stage on opt.Device.
func newGPUEngine(spec *Spec, cfg optim.Config, opt Options) (*gpuEngine, error) {
	mode, err := gpu.ParseMode(opt.Device)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "--device")
	}
	if opt.Comm != nil || (opt.Layout != nil && opt.Layout.Ranks > 1) {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "--device %s runs one rank: the CUDA backend does not lower several ranks (NCCL) yet", opt.Device)
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
	sess, err := gpu.Open(context.Background(), se.lc.Progs[0], spec.Model, gpu.Options{Mode: mode, BF16: bf16Products(spec), FP16: fp16Products(spec)})
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot train %s on --device %s", spec.Model.Name, opt.Device)
	}
	sess.SetOptimizer(cfg)
	e := &gpuEngine{stepEngine: se, sess: sess}
	// The engine has no close: the device memory goes back when the engine is collected
	// (or the process ends).
	runtime.AddCleanup(e, func(s *gpu.Session) { s.Close() }, sess)
	if err := e.toDevice(); err != nil {
		return nil, err
	}
	return e, nil
}

// persistent calls f for each buffer that outlives a step (weights, gradients, moments)
// with the executor's view of it.
func (e *gpuEngine) persistent(f func(b *step.Buffer, view []float32) error) error {
	ex := e.lc.Ranks[0]
	for i, b := range e.sess.Buffers() {
		if !b.Kind.Persistent() || b.Tier != step.Device {
			continue
		}
		if v := ex.Buffer(i); v != nil {
			if err := f(b, v); err != nil {
				return fmt.Errorf("train: %s: %w", b.Name, err)
			}
		}
	}
	return nil
}

func (e *gpuEngine) toDevice() error {
	e.stale = false
	return e.persistent(func(b *step.Buffer, v []float32) error { return e.sess.Upload(b.Offset, v) })
}

func (e *gpuEngine) fromDevice() error {
	if !e.stale {
		return nil
	}
	e.stale = false
	return e.persistent(func(b *step.Buffer, v []float32) error { return e.sess.Download(b.Offset, v) })
}

func (e *gpuEngine) step(stepN int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error) {
	B, T, M := spec.MicroBatch, spec.SeqLen, spec.Accum
	micro := make([][]int32, M)
	for m := range micro {
		toks, err := corpus.Batch(spec.Seed, stepN, m*B, B, T)
		if err != nil {
			return StepRecord{}, optim.StepInfo{}, err
		}
		micro[m] = toks
	}
	e.assembled, e.stale = false, true
	o := gpu.StepOptions{Seed: spec.Seed, Step: stepN}
	if e.loss != nil {
		o.LossScale = e.loss.Scale // fp16: the step engine's dynamic loss scaler (fp16.go)
	}
	st, err := e.sess.Step(micro, o)
	e.steps++
	rec := StepRecord{Loss: st.Loss, CE: st.CE}
	info := optim.StepInfo{LR: st.LR, GradNorm: st.GradNorm}
	if spec.Train != nil {
		info.Clipped = spec.Train.Optimizer.ClipNorm > 0 && st.GradNorm > spec.Train.Optimizer.ClipNorm
	}
	if err == nil && e.loss != nil {
		err = e.scaleStep(&rec, &info, st.Skipped)
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

func (e *gpuEngine) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	if err := e.fromDevice(); err != nil {
		return nil, nil, err
	}
	return e.stepEngine.tensors()
}

func (e *gpuEngine) optStep() int64 { return e.sess.Updates() }

func (e *gpuEngine) load(model, moments []safetensors.Tensor, stepN int64) error {
	if err := e.stepEngine.load(model, moments, stepN); err != nil {
		return err
	}
	if moments != nil {
		e.sess.SetUpdates(stepN)
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
