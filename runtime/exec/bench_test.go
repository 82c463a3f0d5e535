package exec

import (
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// BenchmarkStep is one training step's forward and backward of hunyuan_tiny's eight-expert
// stage, 8 sequences of 128 tokens, on one rank: through the step program (executor) and,
// as the peer in the same run, through the hand-written model.
func BenchmarkStep(b *testing.B) {
	m := hunyuanTiny(b, 8)
	moe := *m.MoE
	m.MoE = &moe
	net, err := nn.New(m, 1)
	if err != nil {
		b.Fatal(err)
	}
	micro := [][]int32{randomTokens(8, 128, 256, 1)}
	b.Run("executor", func(b *testing.B) {
		progs, err := step.Lower(m, step.Batch{MicroBatch: 8, SeqLen: 128, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			b.Fatal(err)
		}
		ex, err := New(progs[0], m, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := ex.LoadTensors(tensorsOf(net)); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := ex.Run(micro, Options{Seed: 1, Step: int64(i)}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(8*128*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	b.Run("hand-written", func(b *testing.B) {
		batch := nn.Batch{B: 8, T: 128, Tokens: micro[0]}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			net.ZeroGrad()
			if _, err := net.ForwardBackward(batch, nn.StepOptions{Seed: 1, Step: int64(i), Train: true}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(8*128*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}

// BenchmarkPrompt reads one 128-token prompt into the KV caches of hunyuan_tiny's
// eight-expert stage on one rank: by the prefill program, position by position through
// the decoding step's program, and position by position through runtime/nn's Decoder.
func BenchmarkPrompt(b *testing.B) {
	const T = 128
	m := hunyuanTiny(b, 8)
	net, err := nn.New(m, 1)
	if err != nil {
		b.Fatal(err)
	}
	prompt := randomTokens(1, T, 256, 1)[:T]
	ld, err := NewLocalDecoder(m, 1, T, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := ld.Load(tensorsOf(net)); err != nil {
		b.Fatal(err)
	}
	b.Run("prefill", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := ld.Prefill([][]int32{prompt}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(T*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	b.Run("decode-steps", func(b *testing.B) {
		pos := []int{0}
		for i := 0; i < b.N; i++ {
			for p, tok := range prompt {
				pos[0] = p
				if _, err := ld.Decode([]int32{tok}, pos); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(T*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	b.Run("hand-written-steps", func(b *testing.B) {
		dec := net.NewDecoder(1, T)
		for i := 0; i < b.N; i++ {
			dec.Reset()
			for _, tok := range prompt {
				if _, err := dec.Step([]int32{tok}); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(T*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}
