package train

import (
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/lang/diag"
)

// Every out-of-range option is refused with E0611 and the option's name, before anything
// runs.
func TestValidateOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  Options
		want string
	}{
		{Options{Steps: -3}, "--steps -3"},
		{Options{MicroBatch: -1}, "--micro-batch -1"},
		{Options{CheckpointEvery: -2}, "--checkpoint-every -2"},
		{Options{MaxTime: -time.Second}, "--max-time -1s"},
		{Options{CollectiveTimeout: -time.Second}, "--collective-timeout -1s"},
		{Options{ValWindows: -1}, "validation windows"},
	} {
		err := tc.opt.validate()
		if diag.CodeOf(err) != diag.CodeBadRunOption || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want E0611 naming %q", tc.opt, err, tc.want)
		}
	}
	if err := (&Options{}).validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}

// A micro-batch that does not divide the batch would silently change it; the error says
// which sizes fit.
func TestCheckMicroBatch(t *testing.T) {
	spec := &Spec{Train: &program.Train{Name: "tiny", TokensPerBatch: 8 * 128}, SeqLen: 128}
	for mb, ok := range map[int]bool{0: true, 1: true, 2: true, 4: true, 8: true, 3: false, 5: false, 16: false} {
		err := checkMicroBatch(spec, mb)
		if ok != (err == nil) {
			t.Errorf("micro-batch %d: %v", mb, err)
		}
		if err != nil && (diag.CodeOf(err) != diag.CodeBadRunOption || !strings.Contains(err.Error(), "use one of 1, 2, 4, 8")) {
			t.Errorf("micro-batch %d: %v", mb, err)
		}
	}
}

// The expert-parallel size is held against the stage's experts, not the model block's.
func TestCheckLayoutExperts(t *testing.T) {
	moe := func(experts int) *program.Model {
		return programtest.TinyMoE(func(m *program.Model) { m.MoE.Experts = experts })
	}
	tr := &program.Train{Name: "hunyuan_tiny"}
	for _, tc := range []struct {
		model *program.Model
		stage string
		l     Sharding
		want  string // "" = accepted
	}{
		{moe(4), "four", Sharding{Ranks: 8, EP: 8}, "expert-parallel size 8 does not divide the 4 experts of stage four"},
		{moe(4), "four", Sharding{Ranks: 8, EP: 4}, ""},
		{moe(8), "eight", Sharding{Ranks: 8, EP: 8}, ""},
		{programtest.Tiny(), "dense", Sharding{Ranks: 2, EP: 2}, "stage dense of train hunyuan_tiny is dense"},
		{programtest.Tiny(), "dense", Sharding{Ranks: 2, EP: 1}, ""},
	} {
		err := checkLayoutExperts(&Spec{Train: tr, Stage: tc.stage, Model: tc.model}, &tc.l)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("stage %s, %v: %v, want %q", tc.stage, tc.l, err, tc.want)
		}
	}
}

// A resumed run that had already finished trained nothing: no throughput, and it says so.
func TestResultStringNothingLeft(t *testing.T) {
	done := &Result{Dir: "d", Steps: 3, TotalSteps: 3, Resumed: true}
	if s := done.String(); strings.Contains(s, "tokens/s") || !strings.Contains(s, "nothing left to train") {
		t.Errorf("finished run resumed: %q", s)
	}
	ran := &Result{Dir: "d", Steps: 3, TotalSteps: 3, Resumed: true, Trained: 2, TokensPerSec: 1000, Loss: 2, LossKnown: true}
	if s := ran.String(); !strings.Contains(s, "1000 tokens/s") || strings.Contains(s, "nothing left") {
		t.Errorf("resumed run that trained: %q", s)
	}
	// Stopped (or resumed without its log) before a step: no loss or rate of 0 to show.
	none := &Result{Dir: "d", Steps: 1, TotalSteps: 3, Resumed: true, Stopped: true}
	if s := none.String(); strings.Contains(s, "loss") || strings.Contains(s, "tokens/s") || !strings.Contains(s, "no step was trained") {
		t.Errorf("resumed run that trained nothing: %q", s)
	}
}
