package main

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/data"
)

// The bf16 loss curve: the floor for `precision = bf16` training is "a 600-step loss curve
// within 1% of fp32's at the end". The curve and curve-bf16 worker modes train the small
// model through the step programs (newStepTrainer) from train.InitialWeights on the same
// sequence of batches of real text (curveText), and the parent puts the two final losses
// side by side.

// curveText is what the curves train on: Go's own source as bytes, the text moec's
// shipped examples train on, a new batch every step (data.Corpus.Batch, the windows of
// `moec run`). The timing rows' one fixed batch of random bytes would be memorised within
// 50 steps, after which the curves compare noise around a memorised batch (measured: float32
// spiked late while bf16 did not, 25% apart at the end), not training.
const curveText = "$GOROOT/src/**/*.go"

// curveSeed picks the curves' windows of curveText; both precisions use it.
const curveSeed = 1

// curveTail is how many of a curve's last steps its final loss averages.
const curveTail = 20

// curveTarget is the floor: the bf16 final loss within 1% of float32's.
const curveTarget = 0.01

// curveStartTolerance is how far step 1's loss (the same weights and batch, before any
// update) may differ between the precisions, relative: bf16's rounding, 2⁻⁹ (half an ulp
// of bfloat16's 8-bit significand), as if the loss itself were rounded to bfloat16. The
// products' rounding averages out far below it (3.6e-5 at the small size). It is a loose
// check: at the initial weights any batch of random bytes has a loss near ln 256, so the
// batch fingerprint (result.Batches) is what tells batches apart.
const curveStartTolerance = 1.0 / 512

// measureCurve trains steps AdamW steps of the model of size through the step programs, in
// float32 or with bf16 products, and records every step's loss (the loss of the forward
// before that step's update), the mean of the last curveTail, a fingerprint of the batches
// seen, and the wall and CPU time.
func measureCurve(res *result, size string, bf16 bool, steps int) error {
	if steps < 1 {
		return fmt.Errorf("-curve-steps %d: a loss curve needs at least one step", steps)
	}
	t, err := newStepTrainer(size, bf16)
	if err != nil {
		return err
	}
	text, err := data.Open(data.Options{Glob: curveText})
	if err != nil {
		return fmt.Errorf("the curve's training text: %w", err)
	}
	h := fnv.New64a()
	c0, t0 := cpuSeconds(), time.Now()
	for step := range steps {
		toks, err := curveBatch(text, step)
		if err != nil {
			return fmt.Errorf("the curve's batch %d: %w", step, err)
		}
		t.micro = [][]int32{toks}
		for _, m := range t.micro {
			if err := binary.Write(h, binary.LittleEndian, m); err != nil {
				return fmt.Errorf("fingerprinting the batch: %w", err)
			}
		}
		if err := t.Step(); err != nil {
			return err
		}
		if math.IsNaN(t.loss) || math.IsInf(t.loss, 0) {
			return fmt.Errorf("loss %v at step %d", t.loss, t.step)
		}
		res.Losses = append(res.Losses, t.loss)
	}
	res.Seconds, res.CPUSeconds = time.Since(t0).Seconds(), cpuSeconds()-c0
	res.Iters = steps
	res.FirstLoss, res.Loss = res.Losses[0], t.loss
	res.FinalLoss = tailMean(res.Losses, curveTail)
	res.Batches = fmt.Sprintf("%016x", h.Sum64())
	if bf16 {
		res.Note = bf16Note()
	}
	return nil
}

// curveBatch is the batch the curves train on at step: a window of curveText for each of
// the batch's sequences, new every step.
func curveBatch(text *data.Corpus, step int) ([]int32, error) {
	return text.Batch(curveSeed, int64(step), 0, benchBatch, benchSeq)
}

// tailMean is the mean of the last n values of xs (of all of them when there are fewer).
func tailMean(xs []float64, n int) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	xs = xs[max(0, len(xs)-n):]
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// bf16Note says how this CPU computed the bf16 products of a curve.
func bf16Note() string {
	if blas.BF16Compute() {
		return "bf16 products on this CPU's AVX512-BF16 instructions (bfloat16 operands, float32 sums)"
	}
	return "bf16 products without bf16 instructions: both operands rounded to bfloat16, summed in float32 — " +
		"numerically what AVX512-BF16/AMX products compute (a product of two bfloat16 values is exact in float32), " +
		"only the order of the sums differs"
}

// sameStart checks that two curves trained on the same batches from the same weights: the
// batch fingerprints must be equal and step 1's losses within bf16 rounding of each other.
func sameStart(fp32, bf16 result) error {
	if len(fp32.Losses) == 0 || len(bf16.Losses) == 0 {
		return fmt.Errorf("a curve without losses (float32 %d steps, bf16 %d)", len(fp32.Losses), len(bf16.Losses))
	}
	if fp32.Batches != bf16.Batches {
		return fmt.Errorf("the precisions saw different batches (fingerprints %s and %s)", fp32.Batches, bf16.Batches)
	}
	a, b := fp32.Losses[0], bf16.Losses[0]
	if d := math.Abs(a-b) / a; !(d <= curveStartTolerance) {
		return fmt.Errorf("step 1's loss: float32 %.6f, bf16 %.6f (%.3g relative, over bf16 rounding's %.3g): not the same weights and batch",
			a, b, d, curveStartTolerance)
	}
	return nil
}

// curveRows are the table's rows of the two curves: the final losses (the mean of the last
// curveTail steps) and their relative difference, held to curveTarget.
func curveRows(fp32, bf16 []float64) []row {
	n := len(fp32)
	tail := fmt.Sprintf("mean of the last %d of %d steps", min(curveTail, n), n)
	a, b := tailMean(fp32, curveTail), tailMean(bf16, curveTail)
	return []row{
		{Name: fmt.Sprintf("bf16 training: final loss (%s) against float32's", tail), Unit: "%",
			Moec: []float64{math.Abs(b-a) / a}, Target: curveTarget, Ceiling: true, Single: true},
		{Name: fmt.Sprintf("bf16 training: final loss, float32 (%s)", tail), Unit: "loss", Moec: []float64{a}, Single: true},
		{Name: fmt.Sprintf("bf16 training: final loss, bf16 products (%s)", tail), Unit: "loss", Moec: []float64{b}, Single: true},
	}
}

// curves runs the curve and curve-bf16 workers once, checks they started from the same
// weights and batches, and returns the table's rows and a note on how the bf16 products
// were computed. A curve that fails (a worker's error, a NaN loss, different starts) does
// not stop the run: its floor row is NaN, missed, and the note says why.
func (d *driver) curves(coretype string) ([]row, string) {
	var rs [2]result
	err := func() error {
		for i, mode := range []string{"curve", "curve-bf16"} {
			m, err := d.child(job{mode: mode, coretype: coretype, size: sizeSmall})
			if err != nil {
				return err
			}
			rs[i] = m.Result
		}
		return sameStart(rs[0], rs[1])
	}()
	if err != nil {
		fmt.Fprintf(d.log, "moebench: bf16 loss curve: %v\n", err)
		return curveRows(nanCurve(d.o.curveSteps), nanCurve(d.o.curveSteps))[:1],
			fmt.Sprintf("bf16 loss curve: no result: %v", firstLine(err.Error()))
	}
	note := fmt.Sprintf("bf16 loss curve: %d AdamW steps of each precision from the same weights on the same batches "+
		"(step 1: float32 %.5f, bf16 %.5f); %s; wall time float32 %.0f s, bf16 %.0f s (load average %s). "+
		"-json holds both curves.", len(rs[0].Losses), rs[0].Losses[0], rs[1].Losses[0], rs[1].Note,
		rs[0].Seconds, rs[1].Seconds, loadAverage())
	return curveRows(rs[0].Losses, rs[1].Losses), note
}

// nanCurve is a curve of steps NaN losses: the rows of a curve that did not run.
func nanCurve(steps int) []float64 {
	xs := make([]float64, steps)
	for i := range xs {
		xs[i] = math.NaN()
	}
	return xs
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
