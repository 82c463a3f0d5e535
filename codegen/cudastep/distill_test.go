package cudastep

import (
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestDistillLowers: a distillation stage at tp 1 lowers each micro-batch's distill_loss
// to dense_distill (the rows' terms and the logits' gradient) and dense_distill_mean (the
// means into a cross-entropy slot and a soft-loss slot), reading the micro-batch's
// teacher_logits input; the host program reads the soft-loss slots.
func TestDistillLowers(t *testing.T) {
	m := tinyStage(t, 2, 1)
	d := step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}
	p, low, err := lowerOne(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Distill: d})
	if err != nil {
		t.Fatal(err)
	}
	teachers := map[int]bool{}
	for i, b := range p.Buffers {
		if strings.HasPrefix(b.Name, "teacher_logits@") {
			teachers[i] = true
		}
	}
	if len(teachers) != 2 {
		t.Fatalf("%d teacher_logits inputs, want one per micro-batch", len(teachers))
	}
	launched := map[string]int{}
	read := map[int]bool{}
	for i, op := range p.Ops {
		if op.Kind != step.OpDistillLoss {
			continue
		}
		var names []string
		for _, l := range low.Ops[i].Launches {
			names = append(names, l.Kernel)
			launched[l.Kernel]++
			if l.Kernel == "dense_distill" && teachers[l.Args[2].Buf] {
				read[l.Args[2].Buf] = true
			}
		}
		if strings.Join(names, " ") != "dense_distill dense_distill_mean" {
			t.Errorf("op %d (%s) launches %v", i, op.Kind, names)
		}
	}
	if launched["dense_distill"] != 2 || len(read) != 2 {
		t.Errorf("dense_distill launched %d times over %d teacher inputs, want 2 over 2", launched["dense_distill"], len(read))
	}
	if low.LossSlots != 2 || low.SoftSlots != 2 {
		t.Errorf("%d loss slots and %d soft-loss slots, want 2 and 2", low.LossSlots, low.SoftSlots)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(host, "#define MOEC_SOFT_SLOTS 2\n") {
		t.Error("the host program does not read the soft-loss slots")
	}
}

// TestShippedDistillStagesLower: every distillation stage of
// examples/hunyuan_tiny_distill.moe (dense_student, dense_warm: the eight-expert
// teacher's students) lowers to CUDA at tp 1 with the stage's own temperature and weights,
// each distill_loss launch held to dense_distill's signature and CUDA's limits.
func TestShippedDistillStagesLower(t *testing.T) {
	src, err := os.ReadFile("../../examples/hunyuan_tiny_distill.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny_distill.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	table := map[string]Kernel{}
	for _, k := range denseKernels() {
		table[k.Name] = k
	}
	tr := prog.Trains["hunyuan_tiny"]
	if tr == nil {
		t.Fatal("no train block hunyuan_tiny")
		return
	}
	lowered := 0
	for _, st := range tr.Stages {
		if st.Distill == nil {
			continue
		}
		m := program.StageModel(prog.Models["hunyuan_tiny"], st)
		d := step.Distill{Temperature: st.Distill.Temperature, SoftWeight: st.Distill.SoftWeight, HardWeight: st.Distill.HardWeight}
		p, low, err := lowerOne(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Distill: d})
		if err != nil {
			t.Errorf("stage %s: %v", st.Name, err)
			continue
		}
		n := 0
		for i, op := range p.Ops {
			if op.Kind != step.OpDistillLoss {
				continue
			}
			for _, l := range low.Ops[i].Launches {
				if err := checkLaunch(l, table, p); err != nil {
					t.Errorf("stage %s op %d: %v", st.Name, i, err)
				}
				n++
			}
		}
		if n != 2 {
			t.Errorf("stage %s: %d distill_loss launches, want dense_distill and its mean", st.Name, n)
		}
		lowered++
	}
	if lowered != 2 {
		t.Errorf("%d distillation stages lowered, the example has 2", lowered)
	}
}
