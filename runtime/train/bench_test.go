package train

import (
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/rng"
)

// hunyuanTiny loads examples/hunyuan_tiny.moe and returns the model of a stage.
func hunyuanTiny(tb testing.TB, stage string) (*program.Model, *program.Train) {
	tb.Helper()
	prog, _, diags := check.Load("../../examples/hunyuan_tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		tb.Fatal(diags.Err())
	}
	t := prog.Trains["hunyuan_tiny"]
	st, err := t.LookupStage(stage)
	if err != nil {
		tb.Fatal(err)
	}
	return program.StageModel(prog.Models["hunyuan_tiny"], st), t
}

// BenchmarkTinyTrainStep measures one optimizer step (forward, backward, AdamW) of the
// 8-expert hunyuan_tiny stage on one micro-batch of 8 sequences of 128 tokens.
func BenchmarkTinyTrainStep(b *testing.B) {
	m, t := hunyuanTiny(b, "eight")
	net, err := nn.New(m, 1)
	if err != nil {
		b.Fatal(err)
	}
	var ps []optim.Param
	for _, p := range net.Params() {
		ps = append(ps, optim.Param{Name: p.Name, Shape: p.Shape, W: p.W, G: p.G})
	}
	adam, err := optim.NewAdamW(optim.FromProgram(t.Optimizer, 0, 1000), ps)
	if err != nil {
		b.Fatal(err)
	}
	const B, T = 8, 128
	s := rng.New(1)
	toks := make([]int32, B*(T+1))
	for i := range toks {
		toks[i] = int32(32 + s.Intn(95))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		net.ZeroGrad()
		if _, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 1, Step: int64(i), Train: true}); err != nil {
			b.Fatal(err)
		}
		if _, err := adam.Step(1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
