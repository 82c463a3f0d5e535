package exec

import (
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestFeedMatchesHandWrittenPerLayer: the feeding program computes, beside the variants of
// TestFeedMatchesHandWritten, the attention whose cache or norms differ from layer to layer
// (q/k norms, before or after rotary positions, with cross-layer caches; clamped
// projections; talking heads and shared attention weights under chunks) and Arctic's
// parallel attention, as runtime/nn's decoder does one step at a time, for chunks that
// cross the windows' and chunks' boundaries.
func TestFeedMatchesHandWrittenPerLayer(t *testing.T) {
	for name, attention := range map[string]string{
		"qk_norm share_kv":                             "qk_norm = true; share_kv = 2",
		"qk_norm_after_rope share_kv clip_qkv":         "qk_norm = true; qk_norm_after_rope = true; share_kv = 2; clip_qkv = 0.3",
		"qkv_bias window full_every talking heads":     "qkv_bias = true; window = 3; full_every = 2; talking_heads = true",
		"chunk nope_every talking heads sinks":         "chunk = 4; nope_every = 2; talking_heads = true; sinks = true",
		"llama4 chunk of 2 without temperature floors": "nope_every = 2; chunk = 2; qk_l2_norm = true",
	} {
		t.Run(name, func(t *testing.T) {
			m := attnModel(t, attention)
			net, err := nn.New(m, 3)
			if err != nil {
				t.Fatal(err)
			}
			randomizeConstants(net)
			for _, chunk := range []int{1, 3, 5} {
				if w := feedAlike(t, m, net, 12, chunk); w > 1e-5 {
					t.Errorf("chunks of %d: logits differ by %.3g", chunk, w)
				}
			}
		})
	}
	t.Run("parallel_attention", func(t *testing.T) {
		m := attnModel(t, "window = 4")
		moe := *m.MoE
		moe.ParallelAttention, moe.ParallelDense = true, true
		m.MoE = &moe
		net, err := nn.New(m, 3)
		if err != nil {
			t.Fatal(err)
		}
		randomizeConstants(net)
		for _, chunk := range []int{1, 5} {
			if w := feedAlike(t, m, net, 12, chunk); w > 1e-5 {
				t.Errorf("chunks of %d: logits differ by %.3g", chunk, w)
			}
		}
	})
}
