package exec

import (
	"math"
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/rng"
)

// hunyuanTiny is examples/hunyuan_tiny.moe's model at a stage with experts experts.
func hunyuanTiny(t testing.TB, experts int) *program.Model {
	t.Helper()
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	return program.StageModel(prog.Models["hunyuan_tiny"], &program.Stage{Experts: experts})
}

func randomTokens(B, T, vocab int, seed int64) []int32 {
	r := rng.New(rng.Key(seed, 0, 0, rng.PurposeDataOrder))
	toks := make([]int32, B*(T+1))
	for i := range toks {
		toks[i] = int32(r.Intn(vocab))
	}
	return toks
}

// relErr is ‖a−b‖/‖b‖ (‖a−b‖ when b is zero).
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// TestMatchesHandWrittenModel runs one training step's forward and backward through the
// step program and through runtime/nn on the same weights and tokens, and holds the loss
// terms and every parameter's gradient together: hunyuan_tiny's dense, four- and
// eight-expert stages (talking heads, attention-weight sharing whose dice differ by step,
// the token-embedding router, capacity dropping), and variants for the features the
// shipped file does not use.
func TestMatchesHandWrittenModel(t *testing.T) {
	type variant struct {
		name string
		edit func(m *program.Model)
	}
	variants := []variant{
		{"as shipped", func(*program.Model) {}},
		{"hidden router, top-2 renormalised, swiglu, z-loss, biases", func(m *program.Model) {
			m.MoE.Router = program.RouteHidden
			m.MoE.TopK = 2
			m.MoE.Normalize = true
			m.MoE.Activation = program.SwiGLU
			m.FFN.Activation = program.SwiGLU
			m.MoE.ZLoss = 0.001
			m.MoE.ExpertBias = true
			m.MoE.RouterBias = true
			m.FFN.Bias = true
			m.Attention.TalkingHeads = false
			m.Attention.BiasQKV = true
		}},
		{"sigmoid scores, dropless, layernorm, GQA, learned positions", func(m *program.Model) {
			m.MoE.Score = program.Sigmoid
			m.MoE.CapacityFactor = 0
			m.Norm = program.LayerNorm
			m.Attention.KVHeads = 2
			m.Attention.TalkingHeads = false
			m.Position = program.Learned
			m.MaxPosition = m.SeqLen
		}},
		// The rotary kernel's tables carry the scaling (yarn's ramp and attention factor).
		{"yarn rope scaling", func(m *program.Model) {
			m.RopeScaling = &program.RopeScaling{Type: program.RopeYarn, Factor: 8, OriginalSeqLen: m.SeqLen / 8,
				BetaFast: 32, BetaSlow: 1, Mscale: 1, MscaleAllDim: 0.5}
		}},
	}
	const B, T = 2, 32
	for _, experts := range []int{1, 4, 8} {
		for _, v := range variants {
			m := hunyuanTiny(t, experts)
			if m.MoE != nil && m.MoE.Experts > 1 {
				moe := *m.MoE
				m.MoE = &moe
			}
			if experts == 1 && v.name != "as shipped" {
				continue
			}
			v.edit(m)
			t.Run(v.name+"/"+string(rune('0'+experts)), func(t *testing.T) {
				net, err := nn.New(m, 11)
				if err != nil {
					t.Fatal(err)
				}
				progs, err := step.Lower(m, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
				if err != nil {
					t.Fatal(err)
				}
				ex, err := New(progs[0], m, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range net.Params() {
					dst := ex.Param(p.ID)
					if len(dst) != len(p.W) {
						t.Fatalf("%s (%s): executor buffer has %d values, nn %d", p.Name, p.ID, len(dst), len(p.W))
					}
					copy(dst, p.W)
				}
				for stepN := int64(0); stepN < 3; stepN++ {
					toks := randomTokens(B, T, int(m.Vocab), stepN)
					net.ZeroGrad()
					want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 5, Step: stepN, Train: true})
					if err != nil {
						t.Fatal(err)
					}
					got, err := ex.Run([][]int32{toks}, Options{Seed: 5, Step: stepN})
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range []struct {
						what      string
						got, want float64
					}{{"loss", got.Loss, want.Loss}, {"CE", got.CE, want.CE}, {"balance", got.Balance, want.Balance}, {"z-loss", got.ZLoss, want.ZLoss}} {
						if math.Abs(c.got-c.want) > 1e-5*math.Max(1, math.Abs(c.want)) {
							t.Errorf("step %d: %s %.9g, nn %.9g", stepN, c.what, c.got, c.want)
						}
					}
					if got.Dropped != want.Dropped {
						t.Errorf("step %d: dropped %d, nn %d", stepN, got.Dropped, want.Dropped)
					}
					worst, worstName := 0.0, ""
					for _, p := range net.Params() {
						g := ex.Grad(p.ID)
						if e := relErr(g, p.G); e > worst {
							worst, worstName = e, p.Name
						}
					}
					if worst > 1e-5 {
						t.Errorf("step %d: gradient of %s differs by %.3g (relative)", stepN, worstName, worst)
					}
					t.Logf("step %d: loss %.7f (nn %.7f), shared layers %d, worst gradient error %.2g (%s)", stepN, got.Loss, want.Loss, want.SharedLayers, worst, worstName)
				}
			})
		}
	}
}
