package experiment

import (
	"math"
	"testing"
)

// TestEqualize: a variant's budget lands within half a step of its last stage of the
// baseline's, where rounding each stage on its own missed it by more.
func TestEqualize(t *testing.T) {
	spec := func(steps []int64, fpt []float64) *armSpec {
		return &armSpec{arm: &Arm{Steps: append([]int64(nil), steps...)}, fpt: fpt, tps: 1024}
	}
	for _, c := range []struct {
		name       string
		base, arm  *armSpec
		flops      bool
		wantSteps  []int64
		halfStepOf float64 // the last stage's step cost over 2, relative to the budget
	}{
		// Per-stage rounding gave 4, 4, 4 steps: 36 of 40 units (−10%).
		{"curriculum flops", spec([]int64{8}, []float64{5}), spec([]int64{2, 2, 2}, []float64{1, 3, 5}), true, []int64{4, 4, 5}, 2.5 / 40},
		{"one stage flops", spec([]int64{8}, []float64{5}), spec([]int64{5}, []float64{3}), true, []int64{13}, 1.5 / 40},
		{"curriculum tokens", spec([]int64{7}, []float64{5}), spec([]int64{3, 2, 2}, []float64{1, 3, 5}), false, []int64{3, 2, 2}, 0.5 / 7},
		{"tokens, stages rounded short", spec([]int64{10}, []float64{5}), spec([]int64{1, 1, 1}, []float64{1, 3, 5}), false, []int64{3, 3, 4}, 0.5 / 10},
	} {
		equalize([]*armSpec{c.base, c.arm}, c.flops)
		spend := func(s *armSpec) float64 {
			var f float64
			for i, cost := range s.stepCosts(c.flops) {
				f += float64(s.arm.Steps[i]) * cost
			}
			return f
		}
		ratio := spend(c.arm) / spend(c.base)
		if math.Abs(ratio-1) > c.halfStepOf+1e-12 {
			t.Errorf("%s: steps %v spend %.3f of the baseline's, beyond half a last-stage step (%.3f)", c.name, c.arm.arm.Steps, ratio, c.halfStepOf)
		}
		for i, s := range c.wantSteps {
			if c.arm.arm.Steps[i] != s {
				t.Errorf("%s: steps %v, want %v", c.name, c.arm.arm.Steps, c.wantSteps)
				break
			}
		}
	}
}

// TestSeedClaimsReducedEqualFLOPs: the reduced warm-start run of the QA report (8192
// tokens) plans the curriculum within half a step of its last stage of the baseline's
// FLOPs; it spent 13% fewer before.
func TestSeedClaimsReducedEqualFLOPs(t *testing.T) {
	opt := load(t, "../../examples/seed-claims.moe")
	ex := opt.Program.Experiments["warm_start"]
	if ex == nil || ex.Equal != "flops" || len(ex.Variants) != 1 {
		t.Fatalf("examples/seed-claims.moe no longer has the equal-FLOPs warm_start experiment: %+v", ex)
	}
	base, err := prepareArm(opt, ex, "baseline", ex.Baseline, 8192)
	if err != nil {
		t.Fatal(err)
	}
	ov := map[string]string{}
	for k, v := range ex.Baseline {
		ov[k] = v
	}
	for k, v := range ex.Variants[0].Overrides {
		ov[k] = v
	}
	arm, err := prepareArm(opt, ex, ex.Variants[0].Name, ov, 8192)
	if err != nil {
		t.Fatal(err)
	}
	equalize([]*armSpec{base, arm}, true)
	spend := func(s *armSpec) float64 {
		var f float64
		for i, c := range s.stepCosts(true) {
			f += float64(s.arm.Steps[i]) * c
		}
		return f
	}
	costs := arm.stepCosts(true)
	half := costs[len(costs)-1] / 2
	if d := spend(arm) - spend(base); math.Abs(d) > half {
		t.Errorf("curriculum %v spends %.4g FLOPs, baseline %v %.4g: off by %.1f%%, more than half a last-stage step", arm.arm.Steps, spend(arm), base.arm.Steps, spend(base), 100*d/spend(base))
	}
	t.Logf("baseline %v, curriculum %v: FLOPs ratio %.3f", base.arm.Steps, arm.arm.Steps, spend(arm)/spend(base))
}
