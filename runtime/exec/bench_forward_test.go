package exec

import (
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// BenchmarkForward is BenchmarkStep's forward alone (evaluation: the step program's
// forward ops, the hand-written model's Forward) on the same stage and batch.
func BenchmarkForward(b *testing.B) {
	m := hunyuanTiny(b, 8)
	moe := *m.MoE
	m.MoE = &moe
	const B, T = 8, 128
	micro := [][]int32{randomTokens(B, T, 256, 1)}
	ex, net := newExecutor(b, m, B, T, true)
	b.Run("executor", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := ex.Run(micro, Options{Seed: 1, Step: int64(i)}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	b.Run("hand-written", func(b *testing.B) {
		batch := nn.Batch{B: B, T: T, Tokens: micro[0]}
		for i := 0; i < b.N; i++ {
			if _, err := net.Forward(batch, nn.StepOptions{Seed: 1, Step: int64(i), Train: true}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}
