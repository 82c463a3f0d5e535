package exec

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// activationPeak is the largest total of per-micro-batch values (activations, their
// gradients, routing and pipeline buffers) live at one op of p: the memory sequence
// parallelism and recompute act on, without the persistent states they leave alone.
func activationPeak(p *step.Program) int64 {
	delta := make([]int64, len(p.Ops)+1)
	for i, b := range p.Buffers {
		lt := p.Memory.Lifetime[i]
		if lt[0] < 0 || b.Tier != step.Device {
			continue
		}
		switch b.Kind {
		case step.KindActivation, step.KindActGrad, step.KindDispatch, step.KindComm:
			if b.Param != nil {
				continue // a parameter's full gradient awaiting its ZeRO-2/3 reduction
			}
			delta[lt[0]] += b.Bytes()
			delta[lt[1]+1] -= b.Bytes()
		}
	}
	var live, peak int64
	for _, d := range delta[:len(p.Ops)] {
		live += d
		peak = max(peak, live)
	}
	return peak
}

// TestSequenceParallelMemory: with sequence parallelism every rank's activation peak is
// lower than the same layout's without it, and the programs verify together.
func TestSequenceParallelMemory(t *testing.T) {
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	b := step.Batch{MicroBatch: 2, SeqLen: 32, Micro: 2}
	for _, c := range []struct {
		name string
		l    step.Layout
	}{
		{"tp2", step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}},
		{"tp4", step.Layout{DP: 1, EP: 1, TP: 4, PP: 1}},
		{"tp2 pp2", step.Layout{DP: 1, EP: 1, TP: 2, PP: 2}},
		{"dp2 ep2 tp2 zero3", step.Layout{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain, err := step.Lower(m, b, c.l)
			if err != nil {
				t.Fatal(err)
			}
			l := c.l
			l.SequenceParallel = true
			sp, err := step.Lower(m, b, l)
			if err != nil {
				t.Fatal(err)
			}
			if err := step.VerifyLayout(sp); err != nil {
				t.Fatal(err)
			}
			for r := range sp {
				a, s := activationPeak(plain[r]), activationPeak(sp[r])
				if r == 0 {
					t.Logf("rank 0: activation peak %d bytes with sp, %d without (%.2f); device peak %d, %d", s, a, float64(s)/float64(a),
						sp[r].Memory.Peak[step.Device], plain[r].Memory.Peak[step.Device])
				}
				if s >= a {
					t.Errorf("rank %d: activation peak %d with sp, %d without", r, s, a)
				}
			}
		})
	}
}
