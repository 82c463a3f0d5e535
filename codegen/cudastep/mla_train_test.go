package cudastep

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	moeexec "github.com/moec-dev/moec/runtime/exec"
)

// TestMLATrainingKernelsMatchExec runs kernels_mla.cu's training kernels under the
// emulation against runtime/exec's kernels on the same inputs, at deepseek_tiny's head
// sizes (4 heads, 16 + 8 query/key and 16 value features): the attention keeping its
// weights (causal and a window of 3), its backward (the queries', keys' and values'
// gradients, written and then added to), the heads' backward with and without rotary
// positions (the rope features rotated back, the shared rope key's gradient summed over
// the heads) and the split's. Every value within 1e-5 of exec's (relative to the larger of
// its magnitude and the buffer's root mean square).
func TestMLATrainingKernelsMatchExec(t *testing.T) {
	lib := openMLAEmulation(t, mlaTrainKernels())
	defer lib.Close()

	src, err := os.ReadFile("../../examples/deepseek_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("deepseek_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	m := prog.Models["deepseek_tiny"]
	const B, T = 2, 7
	k, err := moeexec.NewKernels(m, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
	if err != nil {
		t.Fatal(err)
	}
	a := m.Attention
	H, nope, rope, vd := int(a.Heads), int(a.QKNopeHeadDim), int(a.QKRopeHeadDim), int(a.VHeadDim)
	qk, n := nope+rope, B*T
	scale := float32(m.LatentSoftmaxScale())
	r := rand.New(rand.NewPCG(11, 12))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	call := func(name string, blocks, threads int, args ...any) {
		t.Helper()
		f, err := lib.Func("emu_" + name)
		if err != nil {
			t.Fatal(err)
		}
		full := append([]any{int32(blocks), int32(1), int32(1), int32(threads), int32(1), int32(1), int64(0)}, args...)
		if err := f.Call(0, 0, full...); err != nil {
			t.Fatal(err)
		}
	}
	near := func(what string, got, want []float32) {
		t.Helper()
		var sq float64
		for _, v := range want {
			sq += float64(v) * float64(v)
		}
		rms := math.Sqrt(sq / float64(max(len(want), 1)))
		for i := range want {
			if d := math.Abs(float64(got[i]) - float64(want[i])); d > 1e-5*max(math.Abs(float64(want[i])), rms) {
				t.Fatalf("%s[%d] = %.9g, exec %.9g", what, i, got[i], want[i])
			}
		}
	}
	warpBlocks := ceilDiv(B*H*T, mlaWarps)

	for _, mask := range []step.AttnMask{{}, {Window: 3}} {
		t.Run("attention "+mask.String(), func(t *testing.T) {
			q, kk, v, do := fill(n*H*qk), fill(n*H*qk), fill(n*H*vd), fill(n*H*vd)
			o, p := make([]float32, n*H*vd), make([]float32, B*H*T*T)
			k.MLAAttention(q, kk, v, o, p, mask)
			go_, gp := fill(n*H*vd), fill(B*H*T*T) // overwritten, the weights outside the mask with zeros
			call("mla_attention_train", warpBlocks, 32*mlaWarps, q, kk, v, go_, gp, int32(B), int32(H), int32(T), int32(qk), int32(vd), scale,
				int32(mask.Window), int32(mask.Chunk))
			near("weights", gp, p)
			near("output", go_, o)
			dq, dk, dv := make([]float32, n*H*qk), make([]float32, n*H*qk), make([]float32, n*H*vd)
			gq, gk, gv, dsw := make([]float32, n*H*qk), make([]float32, n*H*qk), make([]float32, n*H*vd), make([]float32, B*H*T*T)
			for pass, acc := range []bool{false, true} {
				k.MLAAttentionBwd(do, q, kk, v, p, dq, dk, dv, mask, acc, acc, acc)
				call("mla_attention_bwd_q", warpBlocks, 32*mlaWarps, do, q, kk, v, p, dsw, gq, int32(B), int32(H), int32(T), int32(qk), int32(vd), scale,
					int32(mask.Window), int32(mask.Chunk), int32(pass))
				call("mla_attention_bwd_kv", warpBlocks, 32*mlaWarps, do, q, p, dsw, gk, gv, int32(B), int32(H), int32(T), int32(qk), int32(vd), scale,
					int32(pass), int32(pass))
				near("dq", gq, dq)
				near("dk", gk, dk)
				near("dv", gv, dv)
			}
		})
	}
	for _, rotary := range []bool{true, false} {
		t.Run("heads_bwd rotary "+map[bool]string{true: "on", false: "off"}[rotary], func(t *testing.T) {
			mm := *m
			if !rotary {
				mm.Position = program.Learned
			}
			k, err := moeexec.NewKernels(&mm, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
			if err != nil {
				t.Fatal(err)
			}
			var tab []float32 // none: a null address
			if rotary {
				cos, sin := m.RopeTable(rope, 0, T)
				for _, x := range append(cos, sin...) {
					tab = append(tab, float32(x))
				}
			}
			dqh, dkh, dvh := fill(n*H*qk), fill(n*H*qk), fill(n*H*vd)
			dq, dkvb, dkpe := make([]float32, n*H*qk), make([]float32, n*H*(nope+vd)), make([]float32, n*rope)
			gq, gkv, gpe := make([]float32, n*H*qk), make([]float32, n*H*(nope+vd)), make([]float32, n*rope)
			for pass, acc := range []bool{false, true} {
				k.MLAHeadsBwd(dqh, dkh, dvh, dq, dkvb, dkpe, acc, acc, acc)
				call("mla_heads_bwd", 2, 256, dqh, dkh, dvh, tab, gq, gkv, int32(n), int32(H), int32(nope), int32(rope), int32(vd), int32(T), int32(T),
					int32(pass), int32(pass))
				call("mla_heads_bwd_pe", 1, 256, dkh, tab, gpe, int32(n), int32(H), int32(nope), int32(rope), int32(T), int32(T), int32(pass))
				near("dq", gq, dq)
				near("dkv_b", gkv, dkvb)
				near("dk_pe", gpe, dkpe)
			}
		})
	}
	t.Run("split_bwd", func(t *testing.T) {
		rank := int(a.KVLoraRank)
		dlat, dkpe := fill(n*rank), fill(n*rope)
		dkva, got := make([]float32, n*(rank+rope)), make([]float32, n*(rank+rope))
		for pass, acc := range []bool{false, true} {
			moeexec.MLASplitBwd(dlat, dkpe, dkva, n, acc)
			call("mla_split_bwd", 1, 256, dlat, dkpe, got, int32(n), int32(rank), int32(rope), int32(pass))
			near("dkv_a", got, dkva)
		}
	})
}
