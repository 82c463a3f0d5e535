package gpu

import (
	"context"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestBF16DecodingFollowsFP32: the generated decoding with bf16 weight products (the
// tensor-core mma kernels, Options.BF16: `moec generate --precision bf16`) computes the
// executor's bf16 decoding (its products round their operands to bfloat16 as the
// kernels do) within a tenth of the bf16-fp32 gap, and stays within a bf16 bound of the
// fp32 logits (3% relative), the greedy tokens equal fp32's: a prefill of two prompts and
// three decoding steps of an MoE model, and of a DeepSeek-V2-Lite-shaped one (latent
// attention, a shared expert). On request (MOEC_LONG_EMULATION=1).
func TestBF16DecodingFollowsFP32(t *testing.T) {
	longtest.Require(t, "the emulated tensor-core fragments: about 40 s a model; make test stays under ten minutes")
	needClang(t)
	for name, m := range map[string]*program.Model{
		"moe": programtest.TinyMoE(func(m *program.Model) { m.Attention.KVHeads = 1 }),
		"latent attention": programtest.TinyMoE(func(m *program.Model) {
			a := &m.Attention
			a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 12, 16, 8, 4, 10
			m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 16
		}),
	} {
		t.Run(name, func(t *testing.T) { bf16DecodingFollowsFP32(t, m) })
	}
}

// bf16DecodingFollowsFP32 runs TestBF16DecodingFollowsFP32's comparison on m.
func bf16DecodingFollowsFP32(t *testing.T, m *program.Model) {
	in := step.Inference{Batch: 2, Prompt: 3, MaxLen: 8}
	net, err := nn.New(m, 11)
	if err != nil {
		t.Fatal(err)
	}
	whole, shapes := map[params.ID][]float32{}, map[params.ID][]int{}
	for _, w := range net.Params() {
		whole[w.ID], shapes[w.ID] = w.W, w.Shape
	}
	// executor opens the executor's prefill and decoding step, with bf16 products or not.
	executor := func(bf16 bool) (pex, dex *moexec.Executor) {
		prefill, err := step.LowerPrefill(m, in.Batch, in.Prompt, in.MaxLen)
		if err != nil {
			t.Fatal(err)
		}
		decode, err := step.LowerDecode(m, in.Batch, in.MaxLen)
		if err != nil {
			t.Fatal(err)
		}
		if dex, err = moexec.New(decode, m, nil); err != nil {
			t.Fatal(err)
		}
		if err := dex.LoadParams(func(id params.ID) ([]float32, []int) { return whole[id], shapes[id] }); err != nil {
			t.Fatal(err)
		}
		if pex, err = moexec.NewSharing(prefill, m, nil, dex); err != nil {
			t.Fatal(err)
		}
		pex.SetBF16Products(bf16)
		dex.SetBF16Products(bf16)
		return pex, dex
	}
	p32, d32 := executor(false)
	p16, d16 := executor(true)
	dec, err := OpenDecoder(context.Background(), m, in, Options{Mode: Emulated, Dir: t.TempDir(), BF16: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if err := dec.LoadParams(func(id params.ID) []float32 { return whole[id] }); err != nil {
		t.Fatal(err)
	}
	d, _ := m.Dims()
	prompts := [][]int32{{1, 5, 9}, {7, 2}}
	pos := []int{3, 2}
	var fp32Last []float32 // the previous call's fp32 logits: the greedy tokens fed next
	for s := 0; s <= 3; s++ {
		var fp32, bf16, got []float32
		var err error
		if s == 0 {
			if fp32, err = p32.Prefill(prompts); err == nil {
				if bf16, err = p16.Prefill(prompts); err == nil {
					got, err = dec.Prefill(prompts)
				}
			}
		} else {
			tokens := argmax(fp32Last, in.Batch, d.V)
			if fp32, err = d32.DecodeAt(tokens, pos); err == nil {
				if bf16, err = d16.DecodeAt(tokens, pos); err == nil {
					got, err = dec.Decode(tokens, pos)
				}
			}
			pos[0]++
			pos[1]++
		}
		if err != nil {
			t.Fatal(err)
		}
		gap := relErr(bf16, fp32)
		if gap == 0 {
			t.Fatalf("step %d: the executor's bf16 logits are its fp32 ones: no bf16 products ran", s)
		}
		if e := relErr(got, bf16); e > gap/10 {
			t.Errorf("step %d: bf16 logits %.3g from the executor's bf16 ones, more than a tenth of the bf16-fp32 gap %.3g", s, e, gap)
		}
		if e := relErr(got, fp32); e > 0.03 {
			t.Errorf("step %d: bf16 logits %.3g from fp32's, beyond the bf16 bound 0.03", s, e)
		}
		g, w := argmax(got, in.Batch, d.V), argmax(fp32, in.Batch, d.V)
		if g[0] != w[0] || g[1] != w[1] {
			t.Errorf("step %d: bf16 greedy tokens %v, fp32's %v", s, g, w)
		}
		t.Logf("step %d: bf16-fp32 gap %.3g; the generated bf16 decoding %.2g from the executor's", s, gap, relErr(got, bf16))
		fp32Last = append(fp32Last[:0], fp32...)
	}
}
