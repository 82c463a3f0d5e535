package generate

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
)

// TestStepProgramsGenerateAlike: greedy text through the step programs (a prefill, then
// decoding steps, and a second prefill when the context passes seq_len), on one rank and
// under tp 2, ep 2 and both, is the hand-written decoder's.
func TestStepProgramsGenerateAlike(t *testing.T) {
	dir, _ := saveModel(t)
	gen := func(opt Options) string {
		t.Helper()
		opt.Checkpoint, opt.Prompt, opt.MaxTokens = dir, "func main() {", 60
		var b bytes.Buffer
		if err := Run(context.Background(), opt, &b); err != nil {
			t.Fatalf("%+v: %v", opt, err)
		}
		return b.String()
	}
	hand := gen(Options{})
	for _, o := range []Options{{StepPrograms: true}, {TP: 2}, {EP: 2}, {StepPrograms: true, TP: 2, EP: 2}} {
		if got := gen(o); got != hand {
			t.Errorf("%+v: %q, the hand-written decoder %q", o, got, hand)
		}
	}
}

// TestStepProgramsLayoutRefused: a tensor-parallel size that does not divide the heads is
// E0509, before anything is generated.
func TestStepProgramsLayoutRefused(t *testing.T) {
	dir, _ := saveModel(t)
	var b bytes.Buffer
	err := Run(context.Background(), Options{Checkpoint: dir, Prompt: "x", MaxTokens: 5, TP: 3}, &b)
	var de *diag.Diagnostic
	if !errors.As(err, &de) || de.Code != diag.CodeLayoutDivides || !strings.Contains(err.Error(), "tp 3 is more than the model's heads (2)") {
		t.Fatalf("err %v, want E0509 naming the heads", err)
	}
	if b.Len() != 0 {
		t.Errorf("wrote %q before refusing", b.String())
	}
}
