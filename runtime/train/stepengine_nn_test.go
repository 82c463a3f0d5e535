package train

import (
	"context"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestStepProgramValidatesWhatItLowers: LayerNorms without biases and a head bias (DBRX's
// and Phi-3.5-MoE's), which the step program lowers, are computed by the hand-written
// model too, which runs the validation after the last step: the run trains and validates.
// (Before the hand-written model computed them, such runs were refused before their first
// step.)
func TestStepProgramValidatesWhatItLowers(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m *program.Model)
	}{
		{"norm_bias = false", func(m *program.Model) { m.Norm, m.NormNoBias = program.LayerNorm, true }},
		{"head_bias", func(m *program.Model) { m.HeadBias = true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := shardProgram(2)
			c.edit(p.Models["tiny"])
			var log strings.Builder
			res, err := Run(context.Background(), Options{Program: p, OutRoot: t.TempDir(), Layout: &Sharding{Ranks: 1, EP: 1, Program: true},
				ValWindows: 2, Progress: &log})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if res == nil || !strings.Contains(log.String(), "step 2/") {
				t.Errorf("the run did not train its two steps:\n%s", log.String())
			}
		})
	}
}
