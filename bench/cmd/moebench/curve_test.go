package main

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/data"
)

// TestCurveRows: the floor row is |bf16 − fp32| / fp32 of the means of the last 20 steps,
// held to ≤ 1% whichever side of float32's the bf16 loss falls, next to the two losses.
func TestCurveRows(t *testing.T) {
	// A 600-step curve whose last 20 steps average to final; the steps before differ, so
	// a mean over more than the tail would not give final.
	curve := func(final float64) []float64 {
		xs := make([]float64, 600)
		for i := range xs {
			xs[i] = 5 - float64(i)/200
		}
		for i := 580; i < 600; i++ {
			xs[i] = final + 0.01*float64(i%2*2-1) // ±0.01 around final
		}
		return xs
	}
	for _, c := range []struct {
		fp32, bf16 float64
		diff       float64
		verdict    string
	}{
		{2, 2, 0, "met"},
		{2, 2.01, 0.005, "met"},
		{2, 1.99, 0.005, "met"},
		{2, 2.018, 0.009, "met"},
		{2, 2.03, 0.015, "**missed**"},
		{2, 1.97, 0.015, "**missed**"}, // lower is no better: the curves must agree
		{0.5, 0.52, 0.04, "**missed**"},
	} {
		rows := curveRows(curve(c.fp32), curve(c.bf16))
		if len(rows) != 3 {
			t.Fatalf("%d rows, want 3", len(rows))
		}
		r := rows[0]
		if math.Abs(r.Moec[0]-c.diff) > 1e-9 {
			t.Errorf("fp32 %v, bf16 %v: relative difference %v, want %v", c.fp32, c.bf16, r.Moec[0], c.diff)
		}
		if got := r.verdict(); got != c.verdict {
			t.Errorf("fp32 %v, bf16 %v: %q, want %q", c.fp32, c.bf16, got, c.verdict)
		}
		if r.target() != "≤ 1%" || !r.Single || r.Unit != "%" {
			t.Errorf("row %+v: want a single %% row with target ≤ 1%%", r)
		}
		if math.Abs(rows[1].Moec[0]-c.fp32) > 1e-9 || math.Abs(rows[2].Moec[0]-c.bf16) > 1e-9 {
			t.Errorf("final losses %v, %v, want %v, %v", rows[1].Moec, rows[2].Moec, c.fp32, c.bf16)
		}
		if rows[1].verdict() != "" || rows[2].verdict() != "" {
			t.Errorf("the final-loss rows carry a target")
		}
	}
	// A curve that did not run (the failed worker's row) is missed, not met.
	if r := curveRows(nanCurve(600), nanCurve(600))[0]; r.verdict() != "**missed**" || !strings.Contains(r.Name, "last 20 of 600") {
		t.Errorf("a failed curve's row %+v: %q", r, r.verdict())
	}
	if name := curveRows(curve(2), curve(2))[0].Name; !strings.Contains(name, "mean of the last 20 of 600 steps") {
		t.Errorf("head %q does not say what the final loss is", name)
	}
	if name := curveRows([]float64{3, 2, 1}, []float64{3, 2, 1})[1].Name; !strings.Contains(name, "last 3 of 3 steps") {
		t.Errorf("a short curve's head %q", name)
	}
}

func TestTailMean(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		n    int
		want float64
	}{
		{[]float64{1, 2, 3, 4}, 2, 3.5},
		{[]float64{1, 2, 3}, 20, 2},
		{[]float64{7}, 20, 7},
	} {
		if got := tailMean(c.xs, c.n); got != c.want {
			t.Errorf("tailMean(%v, %d) = %v, want %v", c.xs, c.n, got, c.want)
		}
	}
	if !math.IsNaN(tailMean(nil, 20)) {
		t.Error("the mean of no losses is a number")
	}
}

// TestSameStart: curves on other batches, or from other weights (step 1 beyond bf16
// rounding), are refused.
func TestSameStart(t *testing.T) {
	fp32 := result{Losses: []float64{5.5, 5.0}, Batches: "aa"}
	for _, c := range []struct {
		bf16 result
		ok   bool
	}{
		{result{Losses: []float64{5.501, 4.9}, Batches: "aa"}, true},
		{result{Losses: []float64{5.5, 5.0}, Batches: "bb"}, false},
		{result{Losses: []float64{5.6, 5.0}, Batches: "aa"}, false},
		{result{Losses: []float64{math.NaN()}, Batches: "aa"}, false},
		{result{Batches: "aa"}, false},
	} {
		if err := sameStart(fp32, c.bf16); (err == nil) != c.ok {
			t.Errorf("%+v: error %v, want ok %v", c.bf16, err, c.ok)
		}
	}
}

// TestWorkerCurve runs three steps of each precision through the worker's entry point:
// three losses each, the same batches, step 1 within bf16 rounding of float32's but not
// bitwise equal (the bf16 products were on), and the final loss the mean of the three.
func TestWorkerCurve(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the benchmark model")
	}
	var rs [2]result
	for i, mode := range []string{"curve", "curve-bf16"} {
		var out, errb bytes.Buffer
		if err := run([]string{"-worker", mode, "-curve-steps", "3"}, &out, &errb); err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, errb.String())
		}
		if err := json.Unmarshal(out.Bytes(), &rs[i]); err != nil {
			t.Fatalf("%s printed %q: %v", mode, out.String(), err)
		}
		r := rs[i]
		if r.Mode != mode || len(r.Losses) != 3 || r.Batches == "" {
			t.Fatalf("%s: %+v", mode, r)
		}
		if math.Abs(r.FinalLoss-(r.Losses[0]+r.Losses[1]+r.Losses[2])/3) > 1e-12 || r.FirstLoss != r.Losses[0] || r.Loss != r.Losses[2] {
			t.Errorf("%s: final %v, first %v, last %v of %v", mode, r.FinalLoss, r.FirstLoss, r.Loss, r.Losses)
		}
		if r.Losses[0] < 5 || r.Losses[0] > 6 || !(r.Losses[2] < r.Losses[0]) {
			t.Errorf("%s: losses %v, want from near ln 256 down", mode, r.Losses)
		}
	}
	if err := sameStart(rs[0], rs[1]); err != nil {
		t.Fatal(err)
	}
	if rs[0].Losses[0] == rs[1].Losses[0] {
		t.Errorf("step 1's loss %v in both precisions: the bf16 products were not on", rs[0].Losses[0])
	}
	if rs[1].Note == "" || rs[0].Note != "" {
		t.Errorf("notes %q, %q: want how bf16 products ran on the bf16 curve only", rs[0].Note, rs[1].Note)
	}
	t.Logf("step 1: float32 %.7f, bf16 %.7f; step 3: %.7f, %.7f", rs[0].Losses[0], rs[1].Losses[0], rs[0].Losses[2], rs[1].Losses[2])
}

// TestCurveBatchesAreText: the curves train on Go's source, a new batch every step (a
// fixed batch is memorised within 50 steps and the curves then compare noise): two steps'
// batches differ, and nearly every byte of each is printable ASCII or whitespace.
func TestCurveBatchesAreText(t *testing.T) {
	text, err := data.Open(data.Options{Glob: curveText})
	if err != nil {
		t.Fatal(err)
	}
	var prev []int32
	for step := range 3 {
		toks, err := curveBatch(text, step)
		if err != nil {
			t.Fatal(err)
		}
		if len(toks) != benchBatch*(benchSeq+1) { // each window's inputs and its last target
			t.Fatalf("step %d: %d tokens, want %d", step, len(toks), benchBatch*(benchSeq+1))
		}
		printable := 0
		for _, tok := range toks {
			if (tok >= 0x20 && tok < 0x7f) || tok == '\n' || tok == '\t' {
				printable++
			}
		}
		if printable < len(toks)*95/100 {
			t.Errorf("step %d: %d of %d tokens are text: not Go source", step, printable, len(toks))
		}
		if slices.Equal(toks, prev) {
			t.Errorf("step %d trains on step %d's batch", step, step-1)
		}
		prev = toks
	}
}
