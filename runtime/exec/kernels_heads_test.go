package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestCausalBlocksMatchHandWritten runs sequences longer than one causal block (80
// positions: blocks of 32, 32 and 16) through the step program and the hand-written
// model: the losses and every gradient agree, with talking heads and with grouped-query
// attention (two query heads per key/value head).
func TestCausalBlocksMatchHandWritten(t *testing.T) {
	const B, T = 2, 80
	if T <= causalBlock || T%causalBlock == 0 {
		t.Fatalf("%d positions do not end in a partial block of %d", T, causalBlock)
	}
	for _, gqa := range []bool{false, true} {
		m := hunyuanTiny(t, 8)
		moe := *m.MoE
		m.MoE = &moe
		if gqa {
			m.Attention.KVHeads = 2
			m.Attention.TalkingHeads = false
		}
		ex, net := newExecutor(t, m, B, T, false)
		for s := int64(0); s < 2; s++ {
			toks := randomTokens(B, T, int(m.Vocab), 40+s)
			net.ZeroGrad()
			want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 4, Step: s, Train: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ex.Run([][]int32{toks}, Options{Seed: 4, Step: s})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) {
				t.Fatalf("gqa %v step %d: loss %v, hand-written %v", gqa, s, got.Loss, want.Loss)
			}
			for _, p := range net.Params() {
				if e := relErr(ex.Grad(p.ID), p.G); e > 1e-5 {
					t.Errorf("gqa %v step %d: %s gradient off by %.2g", gqa, s, p.Name, e)
				}
			}
		}
	}
}
