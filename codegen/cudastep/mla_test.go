package cudastep

import (
	"slices"
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
// of the rope features. They lower with bf16 weight products too.
func TestServingLowersLatentAttention(t *testing.T) {
	const heads, nope, rope, vd, maxLen = 2, 8, 4, 10, 8
	m := liteMLA()
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
		if got, want := l.Ropes[mlaRopeWork].Floats(), 2*maxLen*rope/2; got != want {
			t.Errorf("the rope tables hold %d values, want %d", got, want)
		}
	}
	if !slices.ContainsFunc(serving.KernelFiles(), func(f KernelFile) bool { return f.Name == "kernels_mla.cu" }) {
		t.Error("the serving program's kernel files lack kernels_mla.cu")
	}
	if _, err := LowerServing(feeds, m, Options{BF16: true}); err != nil {
		t.Errorf("the feeding programs with bf16 products: %v", err)
	}
}

// liteMLA is a DeepSeek-V2-Lite-shaped model (latent attention with a low-rank query, a
// shared expert) of 2 heads of 8+4 query/key and 10 value features.
func liteMLA() *program.Model {
	return programtest.TinyMoE(func(m *program.Model) {
		a := &m.Attention
		a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 12, 16, 8, 4, 10
		m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 16
	})
}

// TestDecodingLowersLatentAttention: the prefill and decoding-step programs of latent
// attention (`moec generate --device`) lower, every op to launches: the prefill's heads at
// each row's place in its prompt (mla_heads with no positions, rows of T), its causal
// attention fused (flash_mla_fwd_q32_v32 over the prompt's own keys and values, T
// positions), the decoding step's by mla_attention_rows over the caches at each sequence's position
// (positions, no sequences), the caches written and appended at each cache's width. With
// bf16 products too. A training program's latent attention lowers to the training
// kernels (mla_train.go; its attention to the fused flash_mla pair), once a layer each.
func TestDecodingLowersLatentAttention(t *testing.T) {
	const batch, prompt, maxLen, heads, qk, vd = 2, 4, 8, 2, 12, 10
	m := liteMLA()
	dec, err := lowerDecoding(t, m, batch, prompt, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Lowered{dec.Prefill, dec.Decode} {
		prefill := l == dec.Prefill
		launched := map[string]int{}
		for i, op := range l.Program.Ops {
			if len(l.Ops[i].Launches) == 0 {
				t.Errorf("prefill %v: op %d (%s) launches nothing", prefill, i, op.Kind)
			}
			for _, ln := range l.Ops[i].Launches {
				launched[ln.Kernel]++
				switch ln.Kernel {
				case "mla_heads":
					if pos, T := ln.Args[3], ln.Args[13].Int; isNull(pos) != prefill || prefill && T != prompt {
						t.Errorf("prefill %v: mla_heads reads positions %v, rows of %d", prefill, !isNull(pos), T)
					}
				case "mla_attention_rows":
					pos, seq, rows, width := ln.Args[3], ln.Args[4], ln.Args[6].Int, ln.Args[10].Int
					wantRows, wantWidth := int64(batch), int64(maxLen)
					if prefill {
						wantRows, wantWidth = batch*prompt, prompt
					}
					if isNull(pos) != prefill || !isNull(seq) || rows != wantRows || width != wantWidth || ln.Grid[0] != int(wantRows)*heads {
						t.Errorf("prefill %v: mla_attention_rows with positions %v, sequences %v, %d rows over %d positions, %d blocks",
							prefill, !isNull(pos), !isNull(seq), rows, width, ln.Grid[0])
					}
				case "flash_mla_fwd_q32_v32":
					if T, H, q, v := ln.Args[6].Int, ln.Args[7].Int, ln.Args[8].Int, ln.Args[9].Int; !prefill || T != prompt || H != heads || q != qk || v != vd ||
						ln.Grid != [3]int{1, heads, batch} {
						t.Errorf("prefill %v: flash_mla_fwd_q32_v32 over %d positions, %d heads of %d/%d, grid %v", prefill, T, H, q, v, ln.Grid)
					}
				case "decode_kv_write", "decode_kv_append":
					if w := ln.Args[len(ln.Args)-1].Int; w != heads*qk && w != heads*vd {
						t.Errorf("%s writes rows of %d values, want %d keys or %d values", ln.Kernel, w, heads*qk, heads*vd)
					}
				}
			}
		}
		cache, attention := "decode_kv_append", "mla_attention_rows"
		if prefill {
			cache, attention = "decode_kv_write", "flash_mla_fwd_q32_v32"
		}
		for _, k := range []string{"mla_split", "mla_heads", attention} {
			if launched[k] != int(m.Layers) {
				t.Errorf("prefill %v: %s launched %d times, want once a layer (%d)", prefill, k, launched[k], m.Layers)
			}
		}
		if launched[cache] != 2*int(m.Layers) {
			t.Errorf("prefill %v: %s launched %d times, want two a layer", prefill, cache, launched[cache])
		}
	}
	if !slices.ContainsFunc(dec.KernelFiles(), func(f KernelFile) bool { return f.Name == "kernels_mla.cu" }) {
		t.Error("the decoding program's kernel files lack kernels_mla.cu")
	}
	prefill, err := step.LowerPrefill(m, batch, prompt, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	decode, err := step.LowerDecode(m, batch, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LowerDecoding(prefill, decode, m, Options{BF16: true}); err != nil {
		t.Errorf("the prefill and decoding steps with bf16 products: %v", err)
	}
	train, err := step.LowerRank(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	low, err := Lower(train, m)
	if err != nil {
		t.Fatalf("a training step of latent attention: %v", err)
	}
	launched := map[string]int{}
	for _, ol := range low.Ops {
		for _, l := range ol.Launches {
			launched[l.Kernel]++
		}
	}
	for _, k := range []string{"flash_mla_fwd_q32_v32", "flash_mla_bwd_prep", "flash_mla_bwd_q32_v32", "mla_heads_bwd", "mla_heads_bwd_pe", "mla_split_bwd"} {
		if launched[k] != int(m.Layers) {
			t.Errorf("a training step of %d latent-attention layers launches %s %d times", m.Layers, k, launched[k])
		}
	}
}

// isNull reports whether a is a null address (NullArg).
func isNull(a Arg) bool {
	return a.Buf < 0 && a.Work == "" && a.Table == nil && a.Kind != I32 && a.Kind != F32
}
