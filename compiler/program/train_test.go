package program

import "testing"

// TestStageSteps: steps round down so the budget is never passed (at least one step); explicit steps win and set
// the tokens at the batch run.
func TestStageSteps(t *testing.T) {
	cases := []struct {
		stage                 Stage
		batch                 int64
		wantSteps, wantTokens int64
	}{
		{Stage{Tokens: 10_000}, 256, 39, 10_000}, // 39.06 batches: 39 steps
		{Stage{Tokens: 10_240}, 256, 40, 10_240}, // exact
		{Stage{Tokens: 1}, 256, 1, 1},            // less than a batch is one step
		{Stage{Tokens: 300e9}, 1_966_080, 152_587, 300e9},
		{Stage{Tokens: 300e9}, 2_097_152, 143_051, 300e9},
		{Stage{Steps: 7, Tokens: 10_000}, 256, 7, 7 * 256},
		{Stage{}, 256, 0, 0},
		{Stage{Tokens: 10_000}, 0, 0, 10_000},
	}
	for _, c := range cases {
		if got := c.stage.StepsAt(c.batch); got != c.wantSteps {
			t.Errorf("%+v at %d: %d steps, want %d", c.stage, c.batch, got, c.wantSteps)
		}
		if got := c.stage.TokensAt(c.batch); got != c.wantTokens {
			t.Errorf("%+v at %d: %d tokens, want %d", c.stage, c.batch, got, c.wantTokens)
		}
	}
}
