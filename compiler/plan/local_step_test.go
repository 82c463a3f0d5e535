package plan

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
)

// TestLocalMemoryIsTheStepProgram: a local plan's per-rank bytes are the memory plans of
// the step programs lowered for its layout, byte for byte per component (device and host
// together) and arena, for one rank, expert parallelism with ZeRO, tensor and pipeline
// parallelism and an offloaded optimizer.
func TestLocalMemoryIsTheStepProgram(t *testing.T) {
	prog := loadSource(t, tinyCPU("16GiB"))
	tr := prog.Trains[prog.TrainOrder[0]]
	st := tr.Stages[len(tr.Stages)-1]
	for _, tc := range []struct {
		ranks int
		o     LocalOptions
	}{
		{1, LocalOptions{}},
		{2, LocalOptions{EP: 2, ZeRO: 1, ZeROSet: true}},
		{4, LocalOptions{EP: 2, ZeRO: 3, ZeROSet: true, Offload: true}},
		{2, LocalOptions{TP: 2}},
		{2, LocalOptions{PP: 2}},
	} {
		p, ds := LocalWith(prog, tr, st, tc.ranks, tc.o)
		if p == nil || ds.HasErrors() {
			t.Fatalf("%d ranks %+v: %v", tc.ranks, tc.o, ds.Err())
		}
		l := p.Layout
		sl := step.Layout{DP: l.DP, EP: l.EP, TP: l.TP, PP: l.PP, ZeRO: l.ZeRO, OffloadOpt: tc.o.Offload, Recompute: l.Recompute}
		progs, err := step.Lower(program.StageModel(prog.Models[tr.Model], st), step.Batch{MicroBatch: l.MicroBatch, SeqLen: 32, Micro: l.GradAccum}, sl)
		if err != nil {
			t.Fatalf("%s: %v", sl, err)
		}
		if len(p.Placement.Ranks) != len(progs) {
			t.Fatalf("%s: %d ranks placed for %d programs", sl, len(p.Placement.Ranks), len(progs))
		}
		for r, pr := range p.Placement.Ranks {
			pm := MemoryOf(progs[r])
			for _, b := range pr.Bytes {
				if want := pm.Component(step.Device, b.Name) + pm.Component(step.Host, b.Name); b.Bytes != want {
					t.Errorf("%s rank %d %s: plan %d bytes, program %d", sl, r, b.Name, b.Bytes, want)
				}
			}
			if pr.ArenaDevice != pm.Arena[step.Device] || pr.ArenaHost != pm.Arena[step.Host] || pr.ArenaDevice == 0 {
				t.Errorf("%s rank %d: plan arenas %d/%d, program %v", sl, r, pr.ArenaDevice, pr.ArenaHost, pm.Arena)
			}
			if tc.o.Offload != (pm.Component(step.Host, "optimizer states") > 0) {
				t.Errorf("%s rank %d: host optimizer states %d with offload %v", sl, r, pm.Component(step.Host, "optimizer states"), tc.o.Offload)
			}
		}
	}
}

// TestLocalWhatStepProgramsDoNotLower: multi-head latent attention, which the step program
// lowers now (it once planned by the formulas with a note), is planned from its programs
// with an arena; a split the step program does not lower is refused by name. (No model the
// hand-written engine trains is refused by the step program on one rank any more.)
func TestLocalWhatStepProgramsDoNotLower(t *testing.T) {
	prog := loadSource(t, strings.Replace(tinyCPU("16GiB"), "attention { heads = 4 }",
		"attention { heads = 4; kv_lora_rank = 8; qk_nope_head_dim = 8; qk_rope_head_dim = 8; v_head_dim = 8 }", 1))
	tr := prog.Trains[prog.TrainOrder[0]]
	st := tr.Stages[len(tr.Stages)-1]
	p, ds := Local(prog, tr, st, 2)
	if p == nil || ds.HasErrors() {
		t.Fatalf("latent attention on 2 ranks: %v", ds.Err())
	}
	if strings.Contains(strings.Join(p.Notes, "\n"), "does not lower") || p.Placement.Ranks[0].ArenaDevice == 0 {
		t.Errorf("notes %q, arena %d: want latent attention planned from its step programs", p.Notes, p.Placement.Ranks[0].ArenaDevice)
	}
	prog = loadSource(t, strings.Replace(tinyCPU("16GiB"), "attention { heads = 4 }", "attention { heads = 4; talking_heads = true }", 1))
	tr = prog.Trains[prog.TrainOrder[0]]
	p, ds = LocalWith(prog, tr, tr.Stages[0], 2, LocalOptions{TP: 2})
	if p != nil || len(ds) == 0 || ds[0].Code != diag.CodeLocalLayout || !strings.Contains(ds[0].Summary, "does not lower talking heads") {
		t.Errorf("talking heads at tp 2: plan %v, diagnostics %v; want E0507 naming talking heads", p != nil, ds)
	}
}
