package generate

import (
	"context"
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/nn"
)

// BenchmarkTinyGenerate measures decoding with the KV cache: the 8-expert hunyuan_tiny
// model (examples/hunyuan_tiny.moe) generating 127 tokens after a 1-token prompt,
// so the context fills the model's 128 positions without re-reading.
func BenchmarkTinyGenerate(b *testing.B) {
	prog, _, diags := check.Load("../../examples/hunyuan_tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		b.Fatal(diags.Err())
	}
	var st *program.Stage
	for _, s := range prog.Trains["hunyuan_tiny"].Stages {
		if s.Name == "eight" {
			st = s
		}
	}
	if st == nil {
		b.Fatal("examples/hunyuan_tiny.moe has no stage eight")
	}
	m, err := nn.New(program.StageModel(prog.Models["hunyuan_tiny"], st), 1)
	if err != nil {
		b.Fatal(err)
	}
	const n = 127
	s := Sampler{Temperature: 0.8, TopK: 40, Seed: 1}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Generate(context.Background(), m, []byte("\n"), n, s, func(byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
