package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
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

// TestSequenceParallelFeatures: the parts of a model sequence parallelism treats apart
// (learned positions and the token-embedding router table sliced to the rank's tokens,
// LayerNorm biases, biased products and router, a shared expert reading the gathered
// stream, attention-weight sharing) compute under tp 2 with sp what one rank computes and
// what tp 2 computes without sp.
func TestSequenceParallelFeatures(t *testing.T) {
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads = false
	m.Norm, m.Position, m.MaxPosition, m.FinalNorm = program.LayerNorm, program.Learned, m.SeqLen, true
	m.FFN.Bias, m.MoE.ExpertBias, m.MoE.RouterBias, m.MoE.SharedExperts = true, true, true, 1
	net, err := nn.New(m, 5)
	if err != nil {
		t.Fatal(err)
	}
	const mb, T, M = 2, 16, 2
	progs, err := step.Lower(m, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, b := range progs[0].Buffers {
		names[b.Name] = true
	}
	for _, want := range []string{"pos/slice@0", "router_rows/slice@0", "L1.shared0.out/scattered@0", "L1.ffn_in/gathered/regathered@0"} {
		if !names[want] {
			t.Errorf("the program has no buffer %s", want)
		}
	}
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 1, SequenceParallel: true},
	} {
		t.Run(l.String(), func(t *testing.T) {
			micro := make([][]int32, l.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(40+i))
			}
			o := Options{Seed: 2, Step: 1}
			one := runLayout(t, m, net, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M}, micro, o)
			plain := l
			plain.SequenceParallel = false
			tp := runLayout(t, m, net, plain, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, micro, o)
			sp := runLayout(t, m, net, l, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, micro, o)
			for _, ref := range []struct {
				name string
				run  layoutRun
			}{{"one rank", one}, {"without sp", tp}} {
				if math.Abs(sp.ce-ref.run.ce) > 1e-5*math.Abs(ref.run.ce) || math.Abs(sp.balance-ref.run.balance) > 1e-5*math.Max(1, math.Abs(ref.run.balance)) {
					t.Errorf("CE %.9g balance %.9g with sp, %.9g %.9g %s", sp.ce, sp.balance, ref.run.ce, ref.run.balance, ref.name)
				}
				for id, want := range ref.run.grads {
					if e := relErr(sp.grads[id], want); e > 1e-5 {
						t.Errorf("gradient of %s differs from %s by %.3g (relative)", id, ref.name, e)
					}
				}
			}
			t.Logf("CE %.7f (one rank %.7f, without sp %.7f)", sp.ce, one.ce, tp.ce)
		})
	}
}
