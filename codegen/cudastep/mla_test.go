package cudastep

import (
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
)

// TestServingLowersLatentAttention: the feeding programs of a DeepSeek-V2-Lite-shaped model
// lower for serving, every layer's latent attention to kernels_mla.cu (the split, the heads
// at each row's position, the rows' attention over caches of heads·(nope+rope) keys and
// heads·v values, each appended by decode_kv_append_rows at its own width) and its latents'
// norms to dense_norm with DeepSeek's epsilon; the rope tables hold the caches' positions
// of the rope features. They lower with bf16 weight products too. The prefill and
// decoding pair (`moec generate`) is still refused, naming the op it lacks.
func TestServingLowersLatentAttention(t *testing.T) {
	const heads, nope, rope, vd, maxLen = 2, 8, 4, 10, 8
	m := programtest.TinyMoE(func(m *program.Model) {
		a := &m.Attention
		a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 12, 16, nope, rope, vd
		m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 16
	})
	var feeds []*step.Program
	for _, rows := range []int{2, 8} {
		p, err := step.LowerFeed(m, 2, rows, maxLen)
		if err != nil {
			t.Fatal(err)
		}
		feeds = append(feeds, p)
	}
	serving, err := LowerServing(feeds, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range serving.Feeds {
		launched := map[string]int{}
		for i, op := range l.Program.Ops {
			for _, ln := range l.Ops[i].Launches {
				launched[ln.Kernel]++
				switch {
				case op.Kind == step.OpLatentNorm:
					if eps := ln.Args[7]; ln.Kernel != "dense_norm" || eps.Float != float32(step.LatentNormEps) {
						t.Errorf("latent_norm launches %s with epsilon %g, want dense_norm with %g", ln.Kernel, eps.Float, step.LatentNormEps)
					}
				case op.Kind == step.OpKVAppendRows:
					width := ln.Args[len(ln.Args)-1].Int
					if width != heads*(nope+rope) && width != heads*vd {
						t.Errorf("kv_append_rows appends rows of %d values, want %d keys or %d values", width, heads*(nope+rope), heads*vd)
					}
				}
			}
		}
		for _, k := range []string{"mla_split", "mla_heads", "mla_attention_rows"} {
			if launched[k] != int(m.Layers) {
				t.Errorf("the feed of %d rows launches %s %d times, want once a layer (%d)", l.Program.Batch.MicroBatch, k, launched[k], m.Layers)
			}
		}
		if launched["decode_kv_append_rows"] != 2*int(m.Layers) {
			t.Errorf("the feed of %d rows appends to %d caches, want two a layer", l.Program.Batch.MicroBatch, launched["decode_kv_append_rows"])
		}
		if got, want := len(l.Consts[mlaRopeWork]), 2*maxLen*rope/2; got != want {
			t.Errorf("the rope tables hold %d values, want %d", got, want)
		}
	}
	if !slices.ContainsFunc(serving.KernelFiles(), func(f KernelFile) bool { return f.Name == "kernels_mla.cu" }) {
		t.Error("the serving program's kernel files lack kernels_mla.cu")
	}
	if _, err := LowerServing(feeds, m, Options{BF16: true}); err != nil {
		t.Errorf("the feeding programs with bf16 products: %v", err)
	}
	if _, err := lowerDecoding(t, m, 2, 4, maxLen); err == nil || !strings.Contains(err.Error(), "mla_") {
		t.Errorf("the prefill and decoding steps of latent attention: %v, want a refusal naming its op", err)
	}
}
