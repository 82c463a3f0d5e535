package analysis

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

func TestFLOPs(t *testing.T) {
	const d, L, H, hd, F, V, S = bD, bL, bH, bD / bH, bF, bV, bS
	layerMat := float64(4*d*d + 2*d*F) // matmul weights of one dense layer
	head := 2.0 * V * d
	causal := float64(S+1) / 2 // mean keys per query over a causal sequence
	attn := func(ctx float64) float64 { return 2*ctx*H*hd + 2*ctx*H*hd }

	tests := []struct {
		name      string
		edit      func(m *program.Model)
		seq       int64
		forward   float64
		attention float64
		router    float64
	}{
		{"base", func(*program.Model) {}, 0, 2*L*layerMat + head + L*attn(causal), L * attn(causal), 0},
		{"tied head still multiplies", func(m *program.Model) { m.TieEmbeddings = true }, 0,
			2*L*layerMat + head + L*attn(causal), L * attn(causal), 0},
		{"learned positions are a lookup", func(m *program.Model) { m.Position = program.Learned }, 0,
			2*L*layerMat + head + L*attn(causal), L * attn(causal), 0},
		{"seq 1024", func(*program.Model) {}, 1024, 2*L*layerMat + head + L*attn(512.5), L * attn(512.5), 0},
		{"window 32", func(m *program.Model) { m.Attention.Window = 32 }, 0,
			2*L*layerMat + head + L*attn((32*33/2+96*32)/128.0), L * attn((32*33/2+96*32)/128.0), 0},
		{"talking heads", func(m *program.Model) { m.Attention.TalkingHeads = true }, 0,
			2*L*layerMat + head + L*(attn(causal)+4*causal*H*H), L * (attn(causal) + 4*causal*H*H), 0},
		{"share_weights 0.5", func(m *program.Model) { m.Attention.ShareWeights = 0.5 }, 0,
			// Layers 1..3 compute Q, K and QK^T half the time; AV and V, O always.
			2*L*layerMat - 3*0.5*2*(2*d*d) + head + L*attn(causal) - 3*0.5*2*causal*H*hd,
			L*attn(causal) - 3*0.5*2*causal*H*hd, 0},
		{"moe top-2 every 2", func(m *program.Model) {
			m.MoE = &program.MoE{Experts: 8, TopK: 2, ExpertHidden: 128, Activation: program.SwiGLU, Every: 2}
		}, 0,
			2*(L*4*d*d+2*2*d*F+2*(2*3*d*128+8*d)) + head + L*attn(causal), L * attn(causal), 2 * 2 * 8 * d},
		{"gated shared expert", func(m *program.Model) {
			m.MoE = &program.MoE{Experts: 8, TopK: 2, ExpertHidden: 128, Activation: program.SwiGLU, Every: 2,
				SharedExperts: 1, SharedHidden: 64, SharedGate: true}
		}, 0,
			// The gate is one d-wide dot product per token per MoE layer, beside the shared expert.
			2*(L*4*d*d+2*2*d*F+2*(2*3*d*128+8*d+3*d*64+d)) + head + L*attn(causal), L * attn(causal), 2 * 2 * 8 * d},
		{"token-embedding router", func(m *program.Model) {
			m.MoE = &program.MoE{Experts: 8, TopK: 1, Every: 1, Router: program.RouteTokenEmbedding, RouterDim: 16}
		}, 0,
			2*(L*4*d*d+L*(2*d*F+8*16)) + head + L*attn(causal), L * attn(causal), L * 2 * 8 * 16},
		{"encoder-decoder", func(m *program.Model) { m.Encoder = 2 }, 0,
			// Encoder layers attend to all S positions; decoder layers add cross-attention
			// (four more d×d projections, all S encoder positions).
			2*(2*layerMat+L*(layerMat+4*d*d)) + head + 2*attn(S) + L*(attn(causal)+attn(S)),
			2*attn(S) + L*(attn(causal)+attn(S)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseModel()
			tt.edit(m)
			f := CountFLOPs(m, tt.seq)
			near(t, "forward", f.ForwardPerToken, tt.forward)
			near(t, "attention", f.AttentionPerToken, tt.attention)
			near(t, "router", f.RouterPerToken, tt.router)
			near(t, "train", f.TrainPerToken, 3*tt.forward)
			near(t, "matmul+attention", f.MatmulPerToken+f.AttentionPerToken, f.ForwardPerToken)
		})
	}
}

func TestFLOPsMTP(t *testing.T) {
	m := baseModel()
	m.MTPDepth = 1
	f := CountFLOPs(m, 0)
	base := CountFLOPs(baseModel(), 0)
	near(t, "forward unchanged", f.ForwardPerToken, base.ForwardPerToken)
	const d, H, hd, F, V = bD, bH, bD / bH, bF, bV
	causal := float64(bS+1) / 2
	mtp := 2*float64(4*d*d+2*d*F+2*d*d) + 4*causal*H*hd + 2*V*d
	near(t, "MTP", f.MTPPerToken, mtp)
	near(t, "train", f.TrainPerToken, 3*(base.ForwardPerToken+mtp))
}

func TestFLOPsPublished(t *testing.T) {
	// Mixtral at 4096 tokens: 2 × (active weights less the embedding lookup) plus attention,
	// 32 layers × 4·ctx·32·128 with ctx = 2048.5.
	c := Count(mixtral8x7b())
	f := CountFLOPs(mixtral8x7b(), 4096)
	matmul := 2 * float64(c.ActiveAll-c.Active.Embedding-c.Active.Norms)
	near(t, "Mixtral matmul", f.MatmulPerToken, matmul)
	near(t, "Mixtral attention", f.AttentionPerToken, 32*4*2048.5*32*128)
	near(t, "Mixtral router", f.RouterPerToken, 32*2*8*4096)
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.6g, want %.6g", what, got, want)
	}
}
