package step

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
)

// TestSequenceParallelDivides: sequence parallelism splits the micro-batch's tokens over
// tp, so a tp size that does not divide them is refused (E0509), and without sp the same
// layout lowers.
func TestSequenceParallelDivides(t *testing.T) {
	m := hunyuanTiny(t, 8) // heads 4
	m.Attention.TalkingHeads = false
	b := Batch{MicroBatch: 1, SeqLen: 6, Micro: 1}
	l := Layout{DP: 1, EP: 1, TP: 4, PP: 1, SequenceParallel: true}
	_, err := Lower(m, b, l)
	want := "sp 4 does not divide the micro-batch's tokens (micro_batch × seq_len) 6"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	ds := Diagnose(err, nil, "tp 4 with sequence parallelism")
	if len(ds) != 1 || ds[0].Code != diag.CodeLayoutDivides || !strings.Contains(ds[0].Suggestion, "turn sequence parallelism off") {
		t.Errorf("diagnostics %+v", ds)
	}
	l.SequenceParallel = false
	if _, err := Lower(m, b, l); err != nil {
		t.Errorf("without sp: %v", err)
	}
}
