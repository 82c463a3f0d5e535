package exec

import (
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// BenchmarkStep is one training step (forward and backward) of hunyuan_tiny's eight-expert
// stage, 8 sequences of 128 tokens, on one rank of the executor.
func BenchmarkStep(b *testing.B) {
	m := hunyuanTiny(b, 8)
	moe := *m.MoE
	m.MoE = &moe
	net, _ := nn.New(m, 1)
	progs, _ := step.Lower(m, step.Batch{MicroBatch: 8, SeqLen: 128, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	ex, _ := New(progs[0], m, nil)
	for _, p := range net.Params() {
		copy(ex.Param(p.ID), p.W)
	}
	micro := [][]int32{randomTokens(8, 128, 256, 1)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ex.Run(micro, Options{Seed: 1, Step: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(8*128*b.N)/b.Elapsed().Seconds(), "tok/s")
}
