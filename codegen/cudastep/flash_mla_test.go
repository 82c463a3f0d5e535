package cudastep

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	rexec "github.com/moec-dev/moec/runtime/exec"
)

// mlaFlashModel is liteMLA with heads of nope+rope query/key and vd value features.
func mlaFlashModel(nope, rope, vd int) *program.Model {
	m := liteMLA()
	a := &m.Attention
	a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = int64(nope), int64(rope), int64(vd)
	return m
}

// TestMLAFlashEmulated runs the fused latent-attention kernels under the CPU emulation
// against runtime/exec's MLAAttention and MLAAttentionBwd (the ops they replace) on the
// same inputs, one shape per kernel pair: deepseek_tiny's 16+8/16 heads (the 32/32 pair),
// 32+8/36 (64/64), 64+32/80 (128/128) and DeepSeek-V3's 128+64/128 (192/128), sequences
// that are not multiples of the tiles, the gradients written or added to, and the
// backward reading the forward's copy of the output (the output overwritten with NaNs in
// between). Every output within 1e-5 of exec's, relative to the buffer's largest value.
func TestMLAFlashEmulated(t *testing.T) {
	emu := flashCompileEmu(t)
	for n, c := range []struct {
		B, T, H, nope, rope, vd int
		acc, keep               bool
		pair                    string
	}{
		{2, 70, 2, 16, 8, 16, false, true, "q32_v32"},
		{1, 37, 3, 32, 8, 36, true, false, "q64_v64"},
		{1, 20, 1, 64, 32, 80, false, false, "q128_v128"},
		{1, 35, 1, 128, 64, 128, true, true, "q192_v128"},
	} {
		qk := c.nope + c.rope
		t.Run(fmt.Sprintf("B%d_T%d_H%d_qk%d_v%d_acc%v_keep%v", c.B, c.T, c.H, qk, c.vd, c.acc, c.keep), func(t *testing.T) {
			m := mlaFlashModel(c.nope, c.rope, c.vd)
			kn, err := rexec.NewKernels(m, step.Batch{MicroBatch: c.B, SeqLen: c.T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(uint64(n), 21))
			nq, nv := c.B*c.T*c.H*qk, c.B*c.T*c.H*c.vd
			q, k, v, do := flashRandom(r, nq), flashRandom(r, nq), flashRandom(r, nv), flashRandom(r, nv)
			prior := [][]float32{flashRandom(r, nq), flashRandom(r, nq), flashRandom(r, nv)}
			bufs := [][]float32{slices.Clone(q), slices.Clone(k), slices.Clone(v), flashRandom(r, nv), slices.Clone(do),
				slices.Clone(prior[0]), slices.Clone(prior[1]), slices.Clone(prior[2])}
			s := MLAFlashShape{Batch: c.B, SeqLen: c.T, Heads: c.H, QK: qk, V: c.vd}
			scale := float32(m.LatentSoftmaxScale())
			lse, keep := WorkArg(PtrF32, "lse", s.StatBytes()), BufArg(PtrF32, flashO)
			if c.keep {
				keep = WorkArg(PtrF32, "keep", s.OutBytes())
			}
			b := func(i int) Arg { return BufArg(PtrF32, i) }
			fwd, err := MLAFlashForward(s, scale, b(flashQ), b(flashK), b(flashV), b(flashO), keep, lse)
			if err != nil {
				t.Fatal(err)
			}
			bwd, err := MLAFlashBackward(s, scale, FlashGrads{Q: b(flashQ), K: b(flashK), V: b(flashV), O: keep, LSE: lse, DO: b(flashDO),
				DQ: b(flashDQ), DK: b(flashDK), DV: b(flashDV), Delta: WorkArg(PtrF32, "delta", s.StatBytes()), AccQ: c.acc, AccK: c.acc, AccV: c.acc})
			if err != nil {
				t.Fatal(err)
			}
			if fwd[0].Kernel != "flash_mla_fwd_"+c.pair || bwd[1].Kernel != "flash_mla_bwd_"+c.pair {
				t.Fatalf("launches %s and %s, want the %s pair", fwd[0].Kernel, bwd[1].Kernel, c.pair)
			}
			work := map[string][]float32{}
			emu.run(t, fwd, bufs, work)
			o := slices.Clone(bufs[flashO])
			if c.keep {
				for i := range bufs[flashO] {
					bufs[flashO][i] = float32(math.NaN())
				}
			}
			emu.run(t, bwd, bufs, work)

			wo, p := make([]float32, nv), make([]float32, c.B*c.H*c.T*c.T)
			kn.MLAAttention(q, k, v, wo, p, step.AttnMask{})
			dq, dk, dv := make([]float32, nq), make([]float32, nq), make([]float32, nv)
			if c.acc {
				dq, dk, dv = slices.Clone(prior[0]), slices.Clone(prior[1]), slices.Clone(prior[2])
			}
			kn.MLAAttentionBwd(do, q, k, v, p, dq, dk, dv, step.AttnMask{}, c.acc, c.acc, c.acc)
			for i, x := range [][]float32{q, k, v, do} {
				if flashErr(bufs[[]int{flashQ, flashK, flashV, flashDO}[i]], x) != 0 {
					t.Fatalf("the kernels changed input %d", i)
				}
			}
			for _, g := range []struct {
				name      string
				got, want []float32
			}{{"o", o, wo}, {"dq", bufs[flashDQ], dq}, {"dk", bufs[flashDK], dk}, {"dv", bufs[flashDV], dv}} {
				e := flashErr(g.got, g.want)
				if e > 1e-5 || math.IsNaN(e) {
					t.Errorf("%s off the executor's by %.3g relative to its largest value", g.name, e)
				}
				t.Logf("%s: %.2g", g.name, e)
			}
		})
	}
}

// TestMLATrainingLowersFlash: a training step of latent attention (deepseek_tiny's head
// sizes, without and with full recompute) runs every layer's and micro-batch's attention
// fused: flash_mla_fwd_q32_v32 at every mla_attention (full recompute's first forward
// too), flash_mla_bwd_prep and
// flash_mla_bwd_q32_v32 where mla_attention_bwd ran, and neither the warp-per-row kernels
// nor any launch touching the attention weights p or the scores' gradient workspace. A
// sliding window keeps the warp-per-row kernels (the fused ones attend to the whole
// causal prefix), as do heads wider than 192/128.
func TestMLATrainingLowersFlash(t *testing.T) {
	const micro = 2
	lower := func(t *testing.T, m *program.Model, recompute program.Recompute) (*Lowered, map[string]int) {
		t.Helper()
		p, err := step.LowerRank(m, step.Batch{MicroBatch: 2, SeqLen: 8, Micro: micro}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: recompute}, 0)
		if err != nil {
			t.Fatal(err)
		}
		low, err := Lower(p, m)
		if err != nil {
			t.Fatal(err)
		}
		launched := map[string]int{}
		for _, ol := range low.Ops {
			for _, l := range ol.Launches {
				launched[l.Kernel]++
			}
		}
		return low, launched
	}
	for _, rc := range []program.Recompute{program.RecomputeNone, program.RecomputeFull} {
		t.Run(fmt.Sprint("recompute ", rc), func(t *testing.T) {
			m := mlaFlashModel(16, 8, 16)
			low, launched := lower(t, m, rc)
			want := int(m.Layers) * micro
			fwds := 0
			weights := map[int]bool{}
			for i, op := range low.Program.Ops {
				switch op.Kind {
				case step.OpMLAAttention:
					weights[op.Out[1]] = true // full recompute's first forward too, whose weights nothing reads
					fwds++
					if ls := low.Ops[i].Launches; len(ls) != 1 || ls[0].Kernel != "flash_mla_fwd_q32_v32" {
						t.Errorf("op %d (mla_attention) launches %v", i, kernelNames(ls))
					}
				case step.OpMLAAttnBwd:
					if ls := low.Ops[i].Launches; len(ls) != 2 || ls[0].Kernel != "flash_mla_bwd_prep" || ls[1].Kernel != "flash_mla_bwd_q32_v32" {
						t.Errorf("op %d (mla_attention_bwd) launches %v", i, kernelNames(ls))
					}
				}
			}
			if low.FusedAttention != want {
				t.Errorf("%d attention cores fused, want %d", low.FusedAttention, want)
			}
			if fwds < want || launched["flash_mla_bwd_q32_v32"] != want {
				t.Errorf("%d fused forwards and %d backwards, want at least %d and %d", fwds, launched["flash_mla_bwd_q32_v32"], want, want)
			}
			for _, k := range []string{"mla_attention_train", "mla_attention_bwd_q", "mla_attention_bwd_kv"} {
				if launched[k] != 0 {
					t.Errorf("%s still launched %d times", k, launched[k])
				}
			}
			for _, ol := range low.Ops {
				for _, l := range ol.Launches {
					for _, a := range l.Args {
						if a.Work == mlaScoresGradWork || a.Kind.Pointer() && a.Work == "" && weights[a.Buf] {
							t.Errorf("%s touches the attention weights or their gradient (%s)", l.Kernel, a.Work)
						}
					}
				}
			}
		})
	}
	for _, c := range []struct {
		name string
		edit func(m *program.Model)
	}{
		{"window", func(m *program.Model) { m.Attention.Window = 3 }},
		{"wide heads", func(m *program.Model) { m.Attention.QKNopeHeadDim, m.Attention.VHeadDim = 200, 16 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mlaFlashModel(16, 8, 16)
			c.edit(m)
			_, launched := lower(t, m, program.RecomputeNone)
			if launched["mla_attention_train"] == 0 || launched["flash_mla_fwd_q32_v32"]+launched["flash_mla_bwd_prep"] != 0 {
				t.Errorf("launches %v: want the warp-per-row kernels", launched)
			}
		})
	}
}

func kernelNames(ls []Launch) string {
	var names []string
	for _, l := range ls {
		names = append(names, l.Kernel)
	}
	return strings.Join(names, ", ")
}

// TestMLAFlashSharedMemory: every latent-attention pair's launches fit the 48 KiB a
// kernel gets without opting in, at any sequence length.
func TestMLAFlashSharedMemory(t *testing.T) {
	b := BufArg(PtrF32, 0)
	for _, w := range [][2]int{{24, 16}, {40, 36}, {96, 80}, {192, 128}} {
		for _, T := range []int{1, 4096} {
			s := MLAFlashShape{Batch: 2, SeqLen: T, Heads: 4, QK: w[0], V: w[1]}
			fwd, err := MLAFlashForward(s, 0.1, b, b, b, b, b, b)
			if err != nil {
				t.Fatal(err)
			}
			bwd, err := MLAFlashBackward(s, 0.1, FlashGrads{Q: b, K: b, V: b, O: b, LSE: b, DO: b, DQ: b, DK: b, DV: b, Delta: b})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range append(fwd, bwd...) {
				if l.Shared > 48<<10 {
					t.Errorf("%d/%d: %s takes %d bytes of shared memory", w[0], w[1], l.Kernel, l.Shared)
				}
			}
		}
	}
	if _, err := MLAFlashForward(MLAFlashShape{Batch: 1, SeqLen: 8, Heads: 1, QK: 256, V: 128}, 0.1, b, b, b, b, b, b); err == nil ||
		!strings.Contains(err.Error(), "192/128") {
		t.Errorf("heads of 256/128: %v, want a refusal naming the widest pair", err)
	}
}

// TestMLAFlashKeepsOutput: where the memory plan lets another op write over the attention
// output between the forward and the backward (the unfused backward does not read it),
// the fused forward keeps a copy in a workspace and the backward's D = rowsum(dO ⊙ O)
// reads the copy; where nothing does, both use the output itself.
func TestMLAFlashKeepsOutput(t *testing.T) {
	m := mlaFlashModel(16, 8, 16)
	p, err := step.LowerRank(m, step.Batch{MicroBatch: 2, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	fwd, bwd := -1, -1
	for i, op := range p.Ops {
		if op.Kind == step.OpMLAAttention && fwd < 0 {
			fwd = i
		}
	}
	for i, op := range p.Ops {
		if op.Kind == step.OpMLAAttnBwd && op.In[4] == p.Ops[fwd].Out[1] {
			bwd = i
		}
	}
	if fwd < 0 || bwd < 0 {
		t.Fatalf("no latent attention with a backward: forward %d, backward %d", fwd, bwd)
	}
	o := p.Ops[fwd].Out[0]
	check := func(t *testing.T, p *step.Program, wantKeep bool) {
		t.Helper()
		low, err := Lower(p, m)
		if err != nil {
			t.Fatal(err)
		}
		keep, prepO := low.Ops[fwd].Launches[0].Args[4], low.Ops[bwd].Launches[0].Args[0]
		if wantKeep {
			want := fmt.Sprintf("flash_mla_keep.b%d", p.Ops[fwd].Out[1])
			if keep.Work != want || prepO.Work != want {
				t.Errorf("forward keeps %q, backward reads %q: want both %q", keep.Work, prepO.Work, want)
			}
			return
		}
		if keep.Work != "" || keep.Buf != o || prepO.Work != "" || prepO.Buf != o {
			t.Errorf("forward keeps %+v, backward reads %+v: want the output %d", keep, prepO, o)
		}
	}
	t.Run("output kept by the plan", func(t *testing.T) { check(t, p, false) })
	t.Run("output overwritten", func(t *testing.T) {
		q := *p
		q.Buffers = slices.Clone(p.Buffers)
		w := p.Ops[fwd+1].Out[0] // the next op's output, moved over the attention output's memory
		q.Buffers[w].Tier, q.Buffers[w].Offset = q.Buffers[o].Tier, q.Buffers[o].Offset
		check(t, &q, true)
	})
}
