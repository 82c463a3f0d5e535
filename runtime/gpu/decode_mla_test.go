package gpu

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/internal/longtest"
)

// TestDecodingMatchesExecutorLatentAttention: a DeepSeek-V2-Lite-shaped model (latent
// attention with a low-rank query, a shared expert) decodes under the emulated CUDA
// decoding (`moec generate --device`: the prefill's heads and causal attention over the
// prompts' own keys and values, then mla_attention_rows over the per-head caches at each
// sequence's position, kernels_mla.cu) as runtime/exec decodes it, which holds to
// runtime/nn's latent-caching decoder (runtime/exec's TestMLADecodesAsHandWritten):
// prompts of 3 and 2 tokens (one padded), then four greedy steps, logits within 1e-4.
// On request (MOEC_LONG_EMULATION=1): by default cmd/moec's generate_device_mla.txtar
// holds the same path to the CPU's greedy text.
func TestDecodingMatchesExecutorLatentAttention(t *testing.T) {
	longtest.Require(t, "another compile of the emulated decoding, ~25 s; generate_device_mla.txtar covers the path by default; make test stays under ten minutes")
	matchDecoding(t, programtest.TinyMoE(func(m *program.Model) {
		a := &m.Attention
		a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 12, 16, 8, 4, 10
		m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 16
	}), 4)
}
