package train

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/dist"
)

// TestStepProgramLayouts trains the stage through step programs at tensor- and pipeline-
// parallel layouts (and one rank, and tp 2 with the optimizer offloaded to the host) and
// holds every step's loss, balance loss and gradient
// norm, the drops and the final weights to the hand-written model's single-rank run:
// with one data-parallel replica a step program routes exactly the micro-batches the
// single rank routes, so the runs agree to float32 rounding.
func TestStepProgramLayouts(t *testing.T) {
	steps := int64(50)
	if testing.Short() {
		steps = 12
	}
	p := shardProgram(steps)
	ref, refW := trainLayout(t, p, nil)
	for _, l := range []Sharding{
		{Ranks: 1, EP: 1, Program: true},
		{Ranks: 2, EP: 1, TP: 2},
		{Ranks: 2, EP: 1, PP: 2},
		{Ranks: 4, EP: 1, TP: 2, PP: 2},
		{Ranks: 2, EP: 1, TP: 2, ZeRO: 1, Offload: true},
	} {
		t.Run(fmt.Sprintf("tp%d-pp%d-zero%d-offload%v", max(l.TP, 1), max(l.PP, 1), l.ZeRO, l.Offload), func(t *testing.T) {
			recs, w, mem := trainLayoutMem(t, p, &l)
			for i := range ref {
				a, b := ref[i], recs[i]
				if !close(a.Loss, b.Loss, 1e-5) || !close(a.Balance, b.Balance, 1e-5) || !close(a.GradNorm, b.GradNorm, 1e-4) || a.Dropped != b.Dropped {
					t.Fatalf("step %d: loss %.7f balance %.7f grad norm %.6f dropped %d; hand-written model %.7f %.7f %.6f %d",
						a.Step, b.Loss, b.Balance, b.GradNorm, b.Dropped, a.Loss, a.Balance, a.GradNorm, a.Dropped)
				}
			}
			worst := worstWeightDiff(t, refW, w)
			if worst > 1e-4 {
				t.Errorf("final weights differ from the single rank's by up to %g", worst)
			}
			if len(mem) != l.Ranks || mem[0].Measured[0][0] == 0 {
				t.Errorf("memory report: %+v", mem)
			}
			t.Logf("final loss %.7f (hand-written %.7f); worst weight difference %.2g", recs[len(recs)-1].Loss, ref[len(ref)-1].Loss, worst)
		})
	}
}

// TestStepProgramRecompute: a train block with recompute = full trains through step
// programs that run each layer's forward again before its backward, with the losses of the
// hand-written model (which keeps every activation).
func TestStepProgramRecompute(t *testing.T) {
	p := shardProgram(6)
	ref, _ := trainLayout(t, p, nil)
	_, _, keep := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2})
	p.Trains["tiny"].Memory.Recompute = program.RecomputeFull
	recs, _, mem := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2})
	for i := range ref {
		if !close(ref[i].Loss, recs[i].Loss, 1e-5) {
			t.Fatalf("step %d: loss %.7f recomputing, %.7f keeping everything", i+1, recs[i].Loss, ref[i].Loss)
		}
	}
	a, b := keep[0].Measured[dist.Device][dist.Activations], mem[0].Measured[dist.Device][dist.Activations]
	t.Logf("activations at the peak: %d bytes keeping everything, %d recomputing", a, b)
	if b >= a {
		t.Errorf("recompute did not lower the activations at the peak: %d vs %d", b, a)
	}
}

// TestStepProgramResume writes a checkpoint under tp 2 × pp 2 and continues on one rank of
// the hand-written model, and the other way round: the continued runs match the run that
// never changed layout.
func TestStepProgramResume(t *testing.T) {
	p := shardProgram(8)
	p.Trains["tiny"].CheckpointEvery = 4
	whole, _ := trainLayout(t, p, nil)
	for _, c := range []struct {
		name          string
		first, second *Sharding
	}{
		{"tp2pp2-to-1", &Sharding{Ranks: 4, EP: 1, TP: 2, PP: 2}, nil},
		{"1-to-tp2", nil, &Sharding{Ranks: 2, EP: 1, TP: 2}},
	} {
		t.Run(c.name, func(t *testing.T) { resumeAcross(t, p, c.first, c.second, whole, 1e-5) })
	}
}

// TestStepProgramRefusals: a layout that does not divide the model, and a feature the
// step program does not lower, are refused before anything runs.
func TestStepProgramRefusals(t *testing.T) {
	p := shardProgram(2)
	for _, c := range []struct {
		layout Sharding
		want   string
	}{
		{Sharding{Ranks: 3, EP: 1, TP: 3}, "tp 3 is more than the model's heads (2)"},
		{Sharding{Ranks: 4, EP: 1, PP: 4}, "pp 4 is more than the model's layers (2)"},
	} {
		_, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &c.layout, ValWindows: 4})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.layout, err, c.want)
		}
	}
}

// TestStepProgramRecomputeSelective: a train block with recompute = selective trains
// through step programs that compute the attention core again in the backward, with the
// losses of the hand-written model and less activation memory at the peak.
func TestStepProgramRecomputeSelective(t *testing.T) {
	p := shardProgram(4)
	ref, _ := trainLayout(t, p, nil)
	_, _, keep := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2})
	p.Trains["tiny"].Memory.Recompute = program.RecomputeSelective
	recs, _, mem := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2})
	for i := range ref {
		if !close(ref[i].Loss, recs[i].Loss, 1e-5) {
			t.Fatalf("step %d: loss %.7f recomputing the attention core, %.7f keeping everything", i+1, recs[i].Loss, ref[i].Loss)
		}
	}
	a, b := keep[0].Measured[dist.Device][dist.Activations], mem[0].Measured[dist.Device][dist.Activations]
	t.Logf("activations at the peak: %d bytes keeping everything, %d recomputing the attention core", a, b)
	if b >= a {
		t.Errorf("selective recompute did not lower the activations at the peak: %d vs %d", b, a)
	}
}

// TestStepProgramSequenceParallel: tp 2 with sequence parallelism trains with the losses of
// the hand-written model and less activation memory at the peak than tp 2 alone.
func TestStepProgramSequenceParallel(t *testing.T) {
	p := shardProgram(4)
	ref, _ := trainLayout(t, p, nil)
	_, _, plain := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2})
	recs, _, mem := trainLayoutMem(t, p, &Sharding{Ranks: 2, EP: 1, TP: 2, SP: true})
	for i := range ref {
		if !close(ref[i].Loss, recs[i].Loss, 1e-5) {
			t.Fatalf("step %d: loss %.7f with sequence parallelism, %.7f on one rank", i+1, recs[i].Loss, ref[i].Loss)
		}
	}
	a, b := plain[0].Measured[dist.Device][dist.Activations], mem[0].Measured[dist.Device][dist.Activations]
	t.Logf("activations at the peak: %d bytes under tp 2, %d with sequence parallelism", a, b)
	if b >= a {
		t.Errorf("sequence parallelism did not lower the activations at the peak: %d vs %d", b, a)
	}
}
