package exec

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestKernelsIgnoreAttr: an op's Attr is text for the listing; every kernel reads the op's
// typed fields. Layouts whose kernels once chose by Attr — the activation, learned
// positions, a vocabulary-parallel embedding and loss, row-parallel biases on tp rank 0,
// sequence parallelism's token-wise collectives — give bit-equal results with every Attr
// blanked.
func TestKernelsIgnoreAttr(t *testing.T) {
	m := hunyuanTiny(t, 4)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads = false
	m.Position, m.MaxPosition = program.Learned, m.SeqLen
	m.FFN.Bias, m.MoE.ExpertBias = true, true
	net, err := nn.New(m, 7)
	if err != nil {
		t.Fatal(err)
	}
	const mb, T, M = 2, 16, 1
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 1, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 1},
	} {
		t.Run(l.String(), func(t *testing.T) {
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			micro := make([][]int32, l.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(70+i))
			}
			o := Options{Seed: 3, Step: 1}
			progs, err := step.Lower(m, b, l)
			if err != nil {
				t.Fatal(err)
			}
			want := runPrograms(t, m, net, progs, b, micro, o)
			blanked := 0
			for _, p := range progs {
				for i := range p.Ops {
					if p.Ops[i].Attr != "" {
						p.Ops[i].Attr = ""
						blanked++
					}
				}
			}
			got := runPrograms(t, m, net, progs, b, micro, o)
			if blanked == 0 {
				t.Fatal("no op has an Attr: the test shows nothing")
			}
			if got.ce != want.ce || got.balance != want.balance {
				t.Errorf("with Attr blanked: ce %v balance %v, want %v %v", got.ce, got.balance, want.ce, want.balance)
			}
			for id, g := range want.grads {
				if e := relErr(got.grads[id], g); e != 0 {
					t.Errorf("%v: gradient differs by %g with Attr blanked", id, e)
				}
			}
		})
	}
}
