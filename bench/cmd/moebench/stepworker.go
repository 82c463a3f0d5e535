package main

import (
	"fmt"
	"time"

	"github.com/moec-dev/moec/bench/internal/timing"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/train"
)

// The moec side through step programs, the engine `moec run` trains with: the benchmark
// model lowered for one rank and run by runtime/exec, from the weights every engine
// initialises (train.InitialWeights).

// stepTrainer is the training step through the step program: forward, backward and AdamW.
type stepTrainer struct {
	lc    *exec.Local
	micro [][]int32
	step  int64
	loss  float64
}

func oneRank() step.Layout { return step.Layout{DP: 1, EP: 1, TP: 1, PP: 1} }

func newStepTrainer(size string, bf16 bool) (*stepTrainer, error) {
	m := modelFor(size)
	lc, err := exec.NewLocal(m, step.Batch{MicroBatch: benchBatch, SeqLen: benchSeq, Micro: 1}, oneRank(), time.Minute)
	if err != nil {
		return nil, fmt.Errorf("lowering the step program: %w", err)
	}
	if err := lc.SetOptimizer(adamConfig()); err != nil {
		return nil, err
	}
	lc.SetBF16Products(bf16) // `precision = bf16`: bfloat16 products, float32 sums and master weights
	// As `moec run` does: train.InitialWeights' values drawn a tensor at a time into the
	// arena, and the collector keeping the heap near the memory plan's bytes.
	if err := lc.LoadInitial(1); err != nil {
		return nil, err
	}
	lc.LimitHeap()
	return &stepTrainer{lc: lc, micro: [][]int32{benchTokens().Tokens}}, nil
}

func (t *stepTrainer) Step() error {
	st, err := t.lc.Step(t.micro, exec.Options{Seed: 1, Step: t.step})
	if err != nil {
		return fmt.Errorf("step %d: %w", t.step, err)
	}
	t.step++
	t.loss = st.Loss
	return nil
}

// measureStepForward times the evaluation program (step.Evaluation): the training
// program's forward ops, embedding to loss, with nothing kept for a backward.
func measureStepForward(res *result, size string, seconds float64, minIters int) error {
	m := modelFor(size)
	progs, err := step.Lower(m, step.Batch{MicroBatch: benchBatch, SeqLen: benchSeq, Micro: 1}, oneRank())
	if err != nil {
		return err
	}
	fwd, err := step.Evaluation(progs[0])
	if err != nil {
		return err
	}
	ex, err := exec.New(fwd, m, nil)
	if err != nil {
		return err
	}
	w, err := train.InitialWeights(m, 1)
	if err != nil {
		return err
	}
	if err := ex.LoadTensors(w); err != nil {
		return err
	}
	micro := [][]int32{benchTokens().Tokens}
	var n int64
	res.Iters, res.Seconds, err = timing.Repeat(seconds, minIters, func() error {
		st, err := ex.Run(micro, exec.Options{Seed: 1, Step: n})
		n++
		res.Loss = st.Loss
		return err
	})
	res.TokensPerS = float64(benchBatch*benchSeq*res.Iters) / res.Seconds
	return err
}
