package train

import (
	"context"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestStepProgramRefusesWhatValidationCannotRun: the step program lowers LayerNorms
// without biases and a head bias, but the validation after the last step runs on the
// hand-written model, which does not: the run is refused before its first step, with
// nothing written.
func TestStepProgramRefusesWhatValidationCannotRun(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m *program.Model)
		want string
	}{
		{"norm_bias = false", func(m *program.Model) { m.Norm, m.NormNoBias = program.LayerNorm, true }, "LayerNorms without biases"},
		{"head_bias", func(m *program.Model) { m.HeadBias = true }, "an output-head bias"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := shardProgram(2)
			c.edit(p.Models["tiny"])
			var log strings.Builder
			_, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &Sharding{Ranks: 1, EP: 1, Program: true},
				ValWindows: 2, Progress: &log})
			if err == nil || !strings.Contains(err.Error(), "its validation runs on the CPU runtime") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want the validation's refusal of %s", err, c.want)
			}
			if strings.Contains(log.String(), "step 1/") {
				t.Errorf("the run trained before refusing:\n%s", log.String())
			}
		})
	}
}
