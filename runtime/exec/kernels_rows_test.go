package exec

import (
	"math"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// biasedExperts is hunyuan_tiny's eight-expert stage with expert biases (so an expert's
// output on an empty slot would be its bias, not zero) and top-2 routing.
func biasedExperts(t testing.TB) *program.Model {
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.MoE.TopK = 2
	m.MoE.ExpertBias = true
	return m
}

// newExecutor is an executor of m's step program (only its forward ops when forwardOnly,
// so the forward's buffers keep their values after Run) and a hand-written model whose
// weights it holds.
func newExecutor(t testing.TB, m *program.Model, B, T int, forwardOnly bool) (*Executor, *nn.Model) {
	t.Helper()
	net, err := nn.New(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	progs, err := step.Lower(m, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	if forwardOnly {
		fwd := *p
		fwd.Ops = nil
		for _, op := range p.Ops {
			if op.Phase == step.Forward {
				fwd.Ops = append(fwd.Ops, op)
			}
		}
		p = &fwd
	}
	ex, err := New(p, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range net.Params() {
		copy(ex.Param(p.ID), p.W)
	}
	return ex, net
}

// TestExpertKernelsSkipEmptySlots: the expert products and activation compute the slots
// the router filled and leave zeros in the rest of the static dispatch size — with expert
// biases, computing an empty slot would leave the bias there. The filled slots are what
// the router kept.
func TestExpertKernelsSkipEmptySlots(t *testing.T) {
	m := biasedExperts(t)
	const B, T = 2, 32
	ex, _ := newExecutor(t, m, B, T, true)
	// With every padding cleared (the kernels' default; the executor leaves unread
	// padding alone), a value in a padding row is one a kernel computed.
	for _, f := range ex.fill {
		if f != nil {
			f.padUnread = false
		}
	}
	for i, b := range ex.p.Buffers {
		if b.Kind == step.KindParam && b.Param != nil && b.Param.Bias {
			for j := range ex.f32[i] {
				ex.f32[i][j] = 0.1 // nn starts biases at zero
			}
		}
	}
	if _, err := ex.Run([][]int32{randomTokens(B, T, int(m.Vocab), 1)}, Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	buf := func(name string) (int, []float32) {
		for i, b := range ex.p.Buffers {
			if b.Name == name {
				return i, ex.f32[i]
			}
		}
		t.Fatalf("no buffer %s", name)
		return 0, nil
	}
	checked := 0
	for _, b := range ex.p.Buffers {
		if !strings.HasSuffix(b.Name, ".expert_kept@0") {
			continue
		}
		layer := strings.TrimSuffix(b.Name, "expert_kept@0")
		kept := ex.i32[indexOf(ex.p, b.Name)]
		for _, name := range []string{"experts.in", "experts.act", "experts.out"} {
			i, x := buf(layer + name + "@0")
			sh := ex.p.Buffers[i].Shape // [experts, slots, width]
			E, C, W := sh[0], sh[1], sh[2]
			filledAll := 0
			for e := 0; e < E; e++ {
				rows := x[e*C*W : (e+1)*C*W]
				nonzero := 0
				for r := 0; r < C; r++ {
					for _, v := range rows[r*W : (r+1)*W] {
						if v != 0 {
							nonzero = r + 1
							break
						}
					}
				}
				if nonzero > int(kept[e]) {
					t.Errorf("%s%s: expert %d has values in slot %d beyond its %d kept", layer, name, e, nonzero-1, kept[e])
				}
				if name == "experts.in" && nonzero != int(kept[e]) {
					t.Errorf("%s%s: expert %d's last token in slot %d, kept %d", layer, name, e, nonzero-1, kept[e])
				}
				filledAll += int(kept[e])
			}
			if filledAll >= E*C {
				t.Fatalf("%s: every slot filled, the test shows nothing", layer)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no MoE layer")
	}
}

func indexOf(p *step.Program, name string) int {
	for i, b := range p.Buffers {
		if b.Name == name {
			return i
		}
	}
	return -1
}

// TestPaddingReachesNoResult: whatever the buffers held before a step (here NaN in every
// value that is not a parameter), the step's losses and gradients are those of an
// executor that starts clean: no kernel reads an empty slot's stale values into a result.
func TestPaddingReachesNoResult(t *testing.T) {
	for _, capacityFactor := range []float64{1.25, 0} { // blocked, and packed (dropless)
		m := biasedExperts(t)
		m.MoE.CapacityFactor = capacityFactor
		paddingReachesNoResult(t, m)
	}
}

func paddingReachesNoResult(t *testing.T, m *program.Model) {
	const B, T = 2, 32
	clean, net := newExecutor(t, m, B, T, false)
	dirty, _ := newExecutor(t, m, B, T, false)
	nan := float32(math.NaN())
	for i, b := range dirty.p.Buffers {
		if b.Kind != step.KindParam && dirty.f32[i] != nil {
			for j := range dirty.f32[i] {
				dirty.f32[i][j] = nan
			}
		}
	}
	for s := int64(0); s < 2; s++ {
		toks := [][]int32{randomTokens(B, T, int(m.Vocab), s)}
		want, err := clean.Run(toks, Options{Seed: 2, Step: s})
		if err != nil {
			t.Fatal(err)
		}
		got, err := dirty.Run(toks, Options{Seed: 2, Step: s})
		if err != nil {
			t.Fatal(err)
		}
		if got.Loss != want.Loss || got.Dropped != want.Dropped {
			t.Fatalf("step %d: loss %v (%d dropped) after NaN buffers, %v (%d) clean", s, got.Loss, got.Dropped, want.Loss, want.Dropped)
		}
		for _, p := range net.Params() {
			g, w := dirty.Grad(p.ID), clean.Grad(p.ID)
			for j := range w {
				if g[j] != w[j] {
					t.Fatalf("step %d: %s gradient[%d] = %v after NaN buffers, %v clean", s, p.Name, j, g[j], w[j])
				}
			}
		}
	}
}

// TestPaddingLeftAloneOnlyWhereUnread: the executor skips clearing an expert buffer's
// padding only where every reader follows the fill counts. On one rank that is every
// expert-major activation; under expert parallelism an all-to-all sends whole blocks, so
// the buffers it reads keep their padding cleared.
func TestPaddingLeftAloneOnlyWhereUnread(t *testing.T) {
	m := hunyuanTiny(t, 8)
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1}, {DP: 2, EP: 2, TP: 1, PP: 1}} {
		progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, l)
		if err != nil {
			t.Fatal(err)
		}
		p := progs[0]
		k, err := NewKernels(m, p.Batch, p.Layout, p.Coord)
		if err != nil {
			t.Fatal(err)
		}
		k.MarkPaddingUnread(p)
		marked, sentWhole := 0, 0
		for _, op := range p.Ops {
			for _, b := range op.In {
				unread := b < len(k.fill) && k.fill[b] != nil && k.fill[b].padUnread
				if unread && !fillAware(op.Kind) {
					t.Errorf("%s: %s reads %s, whose padding is left alone", l, op.Kind, p.Buffers[b].Name)
				}
				if op.Kind == step.OpAllToAllV && !unread {
					sentWhole++
				}
				if unread && op.Kind == step.OpGroupedMM {
					marked++
				}
			}
		}
		if l.EP == 1 && marked == 0 {
			t.Errorf("%s: no expert input left alone; the dropless padding is cleared every op", l)
		}
		if l.EP > 1 && sentWhole == 0 {
			t.Errorf("%s: no all-to-all in the program", l)
		}
	}
}

// TestPackedProductNeedsFill: an expert product over a packed dispatch buffer whose counts
// no permute recorded is refused, not computed with every row against the wrong expert.
func TestPackedProductNeedsFill(t *testing.T) {
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	moe.CapacityFactor = 0 // dropless: packed without expert parallelism
	m.MoE = &moe
	const B, T = 2, 16
	ex, _ := newExecutor(t, m, B, T, true)
	for i := range ex.p.Ops {
		op := &ex.p.Ops[i]
		if op.Kind != step.OpGroupedMM {
			continue
		}
		if len(ex.p.Buffers[op.In[0]].Shape) != 2 {
			t.Fatalf("%s: dispatch buffer %v is not packed (dropless, one rank)", op.Kind, ex.p.Buffers[op.In[0]].Shape)
		}
		err := ex.run(op)
		if err == nil || !strings.Contains(err.Error(), "packed dispatch buffer") {
			t.Fatalf("grouped product before any permute: %v", err)
		}
		return
	}
	t.Fatal("no grouped product in the program")
}
