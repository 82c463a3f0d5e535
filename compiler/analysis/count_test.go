package analysis

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// Hand-derived counts. The base model is small enough that every expected value below is
// written as the formula a reader can check on paper.
const (
	bV = 1000 // vocab
	bD = 64   // d_model
	bL = 4    // layers
	bH = 4    // heads (head_dim 16)
	bF = 256  // ffn hidden
	bS = 128  // seq_len
)

// baseModel: rotary, RMSNorm pre-norm with a final norm, untied head, MHA without biases,
// GELU FFN without biases, dense.
func baseModel() *program.Model {
	// A literal: the checker imports package analysis, so its own tests cannot build through programtest.
	return &program.Model{
		Name: "base", Vocab: bV, VocabPadTo: 1, DModel: bD, Layers: bL, SeqLen: bS,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, MaxPosition: bS,
		Attention: program.Attention{Heads: bH, KVHeads: bH, HeadDim: bD / bH, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: bF, Activation: program.GELU},
	}
}

// baseTotal = embedding + head + L·(4d² attention + 2·d·F FFN + 2 norms) + final norm.
const baseTotal = 2*bV*bD + bL*(4*bD*bD+2*bD*bF+2*bD) + bD

func TestGPT2Small(t *testing.T) {
	// GPT-2 small: learned positions, LayerNorm, tied head, biases everywhere.
	// 12·L·d² + 13·L·d per layer block, plus embeddings and the final LayerNorm:
	// the well-known 124,439,808.
	// A literal: the checker imports package analysis, so its own tests cannot build through programtest.
	m := &program.Model{
		Vocab: 50257, DModel: 768, Layers: 12, SeqLen: 1024, MaxPosition: 1024,
		Norm: program.LayerNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Learned, TieEmbeddings: true,
		Attention: program.Attention{Heads: 12, BiasQKV: true, BiasOut: true},
		FFN:       program.FFN{Hidden: 3072, Activation: program.GELU, Bias: true},
	}
	c := Count(m)
	const d, L = 768, 12
	want := int64(50257*d + 1024*d + L*(12*d*d+13*d) + 2*d)
	if c.TotalAll != want || want != 124439808 {
		t.Fatalf("GPT-2 small = %d, want %d (124439808)", c.TotalAll, want)
	}
	if c.ActiveAll != c.TotalAll {
		t.Errorf("dense model: active %d != total %d", c.ActiveAll, c.TotalAll)
	}
	if got, want := c.TotalNoEmbedding, int64(L*(12*d*d+13*d)+2*d); got != want {
		t.Errorf("non-embedding = %d, want %d", got, want)
	}
}

func TestFeatureToggles(t *testing.T) {
	const d, L, H, hd, F, V = bD, bL, bH, bD / bH, bF, bV
	tests := []struct {
		name       string
		edit       func(m *program.Model)
		total      int64 // expected TotalAll
		activeDiff int64 // expected TotalAll - ActiveAll
	}{
		{"base", func(*program.Model) {}, baseTotal, 0},
		{"tied head", func(m *program.Model) { m.TieEmbeddings = true }, baseTotal - V*d, 0},
		{"vocab padded to 64", func(m *program.Model) { m.VocabPadTo = 64 }, baseTotal + 2*24*d, 0},
		{"learned positions", func(m *program.Model) { m.Position = program.Learned }, baseTotal + bS*d, 0},
		{"learned positions max 512", func(m *program.Model) { m.Position = program.Learned; m.MaxPosition = 512 }, baseTotal + 512*d, 0},
		{"relative positions", func(m *program.Model) { m.Position = program.Relative }, baseTotal + 32*H, 0},
		{"layernorm", func(m *program.Model) { m.Norm = program.LayerNorm }, baseTotal + (2*L+1)*d, 0},
		{"sandwich", func(m *program.Model) { m.NormPlacement = program.SandwichNorm }, baseTotal + 2*L*d, 0},
		{"post", func(m *program.Model) { m.NormPlacement = program.PostNorm }, baseTotal, 0},
		{"no final norm", func(m *program.Model) { m.FinalNorm = false }, baseTotal - d, 0},
		{"GQA kv_heads 2", func(m *program.Model) { m.Attention.KVHeads = 2 }, baseTotal - L*2*d*(d-2*hd), 0},
		{"MQA", func(m *program.Model) { m.Attention.KVHeads = 1 }, baseTotal - L*2*d*(d-hd), 0},
		{"head_dim 32", func(m *program.Model) { m.Attention.HeadDim = 32 }, baseTotal + L*4*d*(H*32-d), 0},
		{"qk norm", func(m *program.Model) { m.Attention.QKNorm = true }, baseTotal + L*2*hd, 0},
		// q/k norms are RMSNorm scales whatever the model's norm: no bias on a LayerNorm model.
		{"qk norm layernorm", func(m *program.Model) { m.Attention.QKNorm = true; m.Norm = program.LayerNorm }, baseTotal + L*2*hd + (2*L+1)*d, 0},
		{"qk norm full", func(m *program.Model) { m.Attention.QKNorm, m.Attention.QKNormFull = true, true }, baseTotal + L*2*d, 0},
		{"qk norm full GQA", func(m *program.Model) {
			m.Attention.QKNorm, m.Attention.QKNormFull, m.Attention.KVHeads = true, true, 2
		}, baseTotal - L*2*d*(d-2*hd) + L*(d+2*hd), 0},
		{"qk norm full layernorm", func(m *program.Model) {
			m.Attention.QKNorm, m.Attention.QKNormFull, m.Norm = true, true, program.LayerNorm
		}, baseTotal + L*2*d + (2*L+1)*d, 0},
		{"qk norm full with share_kv 4", func(m *program.Model) {
			m.Attention.QKNorm, m.Attention.QKNormFull, m.Attention.ShareKV = true, true, 4
		}, baseTotal - 3*2*d*d + L*d + 1*d, 0},
		{"qk norm full off without qk norm", func(m *program.Model) { m.Attention.QKNormFull = true }, baseTotal, 0},
		{"talking heads", func(m *program.Model) { m.Attention.TalkingHeads = true }, baseTotal + L*2*H*H, 0},
		{"sinks", func(m *program.Model) { m.Attention.Sinks = true }, baseTotal + L*H, 0},
		{"share_kv 2", func(m *program.Model) { m.Attention.ShareKV = 2 }, baseTotal - (L/2)*2*d*d, 0},
		{"share_kv 4 with qk norm", func(m *program.Model) { m.Attention.ShareKV = 4; m.Attention.QKNorm = true },
			baseTotal - 3*2*d*d + L*hd + 1*hd, 0},
		{"share_weights changes no parameter", func(m *program.Model) { m.Attention.ShareWeights = 0.5 }, baseTotal, 0},
		{"qkv bias", func(m *program.Model) { m.Attention.BiasQKV = true }, baseTotal + L*3*d, 0},
		{"out bias", func(m *program.Model) { m.Attention.BiasOut = true }, baseTotal + L*d, 0},
		{"GQA with qkv bias", func(m *program.Model) { m.Attention.KVHeads = 2; m.Attention.BiasQKV = true },
			baseTotal - L*2*d*(d-2*hd) + L*(d+2*2*hd), 0},
		{"swiglu", func(m *program.Model) { m.FFN.Activation = program.SwiGLU }, baseTotal + L*d*F, 0},
		{"geglu with bias", func(m *program.Model) { m.FFN.Activation = program.GeGLU; m.FFN.Bias = true },
			baseTotal + L*d*F + L*(2*F+d), 0},
		{"ffn bias", func(m *program.Model) { m.FFN.Bias = true }, baseTotal + L*(F+d), 0},
		{"ffn hidden 100", func(m *program.Model) { m.FFN.Hidden = 100 }, baseTotal - L*2*d*(F-100), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseModel()
			tt.edit(m)
			c := Count(m)
			if c.TotalAll != tt.total {
				t.Errorf("total = %d, want %d (diff %+d)", c.TotalAll, tt.total, c.TotalAll-tt.total)
			}
			if got := c.TotalAll - c.ActiveAll; got != tt.activeDiff {
				t.Errorf("total - active = %d, want %d", got, tt.activeDiff)
			}
			checkInvariants(t, c)
		})
	}
}

// moeBase: the base model with 8 SwiGLU experts of width 128, top-2, in every second layer.
func moeBase() *program.Model {
	m := baseModel()
	m.MoE = &program.MoE{Experts: 8, TopK: 2, ExpertHidden: 128, Activation: program.SwiGLU,
		Every: 2, Router: program.RouteHidden, Score: program.Softmax}
	return m
}

func TestMoEToggles(t *testing.T) {
	const d, L, F, V = bD, bL, bF, bV
	const E, K, eh = 8, 2, 128
	expert := int64(3 * d * eh)
	dense := int64(2 * d * F)
	// Every = 2 over 4 layers: layers 1 and 3 are MoE; each trades its dense FFN for
	// E experts and an E×d router.
	moeTotal := baseTotal + 2*(E*expert+E*d-dense)
	moeInactive := int64(2 * (E - K) * expert)
	tests := []struct {
		name     string
		edit     func(m *program.Model)
		moe      []int // expected MoE layers
		total    int64
		inactive int64 // TotalAll - ActiveAll
		buffers  int64
	}{
		{"every 2", func(*program.Model) {}, []int{1, 3}, moeTotal, moeInactive, 0},
		{"every 1", func(m *program.Model) { m.MoE.Every = 1 }, []int{0, 1, 2, 3},
			baseTotal + 4*(E*expert+E*d-dense), 4 * (E - K) * expert, 0},
		{"first_dense 1 every 1", func(m *program.Model) { m.MoE.Every = 1; m.MoE.FirstDense = 1 }, []int{1, 2, 3},
			baseTotal + 3*(E*expert+E*d-dense), 3 * (E - K) * expert, 0},
		{"first_dense 1 every 2", func(m *program.Model) { m.MoE.FirstDense = 1 }, []int{2},
			baseTotal + 1*(E*expert+E*d-dense), 1 * (E - K) * expert, 0},
		{"explicit layers", func(m *program.Model) { m.MoE.Layers = []int{0, 3} }, []int{0, 3}, moeTotal, moeInactive, 0},
		{"top_k 1", func(m *program.Model) { m.MoE.TopK = 1 }, []int{1, 3}, moeTotal, 2 * (E - 1) * expert, 0},
		{"expert activation gelu", func(m *program.Model) { m.MoE.Activation = program.GELU }, []int{1, 3},
			baseTotal + 2*(E*2*d*eh+E*d-dense), 2 * (E - K) * 2 * d * eh, 0},
		{"expert bias", func(m *program.Model) { m.MoE.ExpertBias = true }, []int{1, 3},
			moeTotal + 2*E*(2*eh+d), moeInactive + 2*(E-K)*(2*eh+d), 0},
		{"router bias", func(m *program.Model) { m.MoE.RouterBias = true }, []int{1, 3}, moeTotal + 2*E, moeInactive, 0},
		{"shared experts", func(m *program.Model) { m.MoE.SharedExperts = 2; m.MoE.SharedHidden = 64 }, []int{1, 3},
			moeTotal + 2*2*3*d*64, moeInactive, 0},
		{"shared experts with a gate", func(m *program.Model) { m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 2, 64, true },
			[]int{1, 3}, moeTotal + 2*2*3*d*64 + 2*d, moeInactive, 0},
		{"shared gate without shared experts", func(m *program.Model) { m.MoE.SharedGate = true }, []int{1, 3}, moeTotal, moeInactive, 0},
		{"parallel dense", func(m *program.Model) { m.MoE.ParallelDense = true }, []int{1, 3}, moeTotal + 2*dense, moeInactive, 0},
		{"parallel attention: a residual norm per MoE layer", func(m *program.Model) { m.MoE.ParallelDense, m.MoE.ParallelAttention = true, true },
			[]int{1, 3}, moeTotal + 2*dense + 2*d, moeInactive, 0},
		{"aux-free bias is a buffer", func(m *program.Model) { m.MoE.AuxFreeBias = 0.001 }, []int{1, 3}, moeTotal, moeInactive, 2 * E},
		{"token-embedding router", func(m *program.Model) { m.MoE.Router = program.RouteTokenEmbedding; m.MoE.RouterDim = 32 }, []int{1, 3},
			moeTotal - 2*E*d + 2*E*32 + V*32, moeInactive, 0},
		{"experts 0 is dense", func(m *program.Model) { m.MoE.Experts = 0 }, nil, baseTotal, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := moeBase()
			tt.edit(m)
			c := Count(m)
			if c.TotalAll != tt.total {
				t.Errorf("total = %d, want %d (diff %+d)", c.TotalAll, tt.total, c.TotalAll-tt.total)
			}
			if got := c.TotalAll - c.ActiveAll; got != tt.inactive {
				t.Errorf("total - active = %d, want %d", got, tt.inactive)
			}
			if c.Buffers != tt.buffers {
				t.Errorf("buffers = %d, want %d", c.Buffers, tt.buffers)
			}
			var moe []int
			for _, l := range c.Layers {
				if l.MoE {
					moe = append(moe, l.Index)
				}
			}
			if len(moe) != len(tt.moe) {
				t.Errorf("MoE layers %v, want %v", moe, tt.moe)
			} else {
				for i := range moe {
					if moe[i] != tt.moe[i] {
						t.Errorf("MoE layers %v, want %v", moe, tt.moe)
						break
					}
				}
			}
			checkInvariants(t, c)
		})
	}
}

func TestMLA(t *testing.T) {
	const d, L, H, V = bD, bL, bH, bV
	const qr, kvr, nope, rope, v = 24, 16, 8, 4, 12
	m := baseModel()
	m.Attention = program.Attention{Heads: H, KVHeads: H, MLA: true, QLoraRank: qr, KVLoraRank: kvr,
		QKNopeHeadDim: nope, QKRopeHeadDim: rope, VHeadDim: v, ShareWeights: 1, ShareKV: 1}
	attn := int64(d*qr + qr + qr*H*(nope+rope) + // q_a_proj, q_a_layernorm, q_b_proj
		d*(kvr+rope) + kvr + kvr*H*(nope+v) + // kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
		H*v*d) // o_proj
	want := int64(2*V*d) + L*(attn+2*d*bF+2*d) + d
	if got := Count(m).TotalAll; got != want {
		t.Errorf("MLA total = %d, want %d", got, want)
	}

	m.Attention.QLoraRank = 0 // full-rank q_proj
	attnFull := attn - (d*qr + qr + qr*H*(nope+rope)) + d*H*(nope+rope)
	if got, want := Count(m).Layers[0].Attention, attnFull; got != want {
		t.Errorf("MLA q_lora_rank 0: attention = %d, want %d", got, want)
	}

	m.Attention.QLoraRank = qr
	m.Attention.BiasQKV, m.Attention.BiasOut = true, true // bias on q_a, kv_a and o only
	if got, want := Count(m).Layers[0].Attention, attn+qr+(kvr+rope)+d; got != want {
		t.Errorf("MLA with bias: attention = %d, want %d", got, want)
	}
}

func TestEncoderDecoder(t *testing.T) {
	const d, L, H, F, V = bD, bL, bH, bF, bV
	m := baseModel()
	m.Encoder = 3
	m.Position = program.Relative
	c := Count(m)
	enc := int64(4*d*d + 2*d*F + 2*d)
	dec := enc + 4*d*d + d // cross-attention and its norm
	want := int64(2*V*d) + 3*enc + L*dec + 2*d /* final norm per stack */ + 2*32*H
	if c.TotalAll != want {
		t.Errorf("encoder-decoder total = %d, want %d", c.TotalAll, want)
	}
	if c.EncoderCount != 3 || len(c.Layers) != 3+L || !c.Layers[0].Encoder || c.Layers[3].Encoder || !c.Layers[3].Cross {
		t.Errorf("layer layout wrong: %+v", c.Layers)
	}

	// MoE in both stacks (Switch), then in the decoder only.
	m.MoE = &program.MoE{Experts: 4, TopK: 1, Every: 1, EncoderMoE: true}
	perMoE := int64(4*2*d*F + 4*d - 2*d*F)
	if got := Count(m).TotalAll; got != want+(3+L)*perMoE {
		t.Errorf("encoder+decoder MoE total = %d, want %d", got, want+(3+L)*perMoE)
	}
	m.MoE.EncoderMoE = false
	if got := Count(m).TotalAll; got != want+L*perMoE {
		t.Errorf("decoder-only MoE total = %d, want %d", got, want+L*perMoE)
	}
}

func TestMTP(t *testing.T) {
	const d = bD
	m := moeBase()
	m.MoE.Every = 1
	m.MTPDepth = 2
	c := Count(m)
	without := func() int64 { m2 := moeBase(); m2.MoE.Every = 1; return Count(m2).TotalAll }()
	if c.TotalAll != without {
		t.Errorf("MTP changed the headline total: %d vs %d", c.TotalAll, without)
	}
	layer := c.Layers[0].Total // every layer is the same MoE layer
	module := layer + 2*d*d + 2*d + d
	if c.MTP != 2*module {
		t.Errorf("MTP = %d, want 2 × (%d layer + eh_proj + 3 norms) = %d", c.MTP, layer, 2*module)
	}
	if len(c.MTPLayers) != 2 || !c.MTPLayers[0].MoE {
		t.Errorf("MTP layers should be MoE layers: %+v", c.MTPLayers)
	}
	m.Attention.ShareKV = 4 // the modules still hold their own K/V projections
	if got := Count(m).MTP; got != c.MTP {
		t.Errorf("MTP with share_kv 4 = %d, want %d", got, c.MTP)
	}
	if got := c.Conventions()[2]; got.Name != "with_mtp" || got.Total != c.TotalAll+c.MTP {
		t.Errorf("with_mtp convention = %+v", got)
	}
}

func TestZeroModelDoesNotPanic(t *testing.T) {
	// Literals on purpose: models the checker refuses (nothing set, defaults unfilled).
	c := Count(&program.Model{})
	_ = CountFLOPs(&program.Model{}, 0)
	if c.TotalAll != 0 {
		t.Errorf("empty model has %d parameters", c.TotalAll)
	}
	// Only a few fields set: defaults must fill the rest.
	c = Count(&program.Model{Vocab: 10, DModel: 8, Layers: 1, Attention: program.Attention{Heads: 2}, MoE: &program.MoE{Experts: 2}})
	// emb 80 + head 80 + attention 4·64 + 2 experts of 2·8·32 + router 16 + 2 norms 16 (no final norm: FinalNorm false)
	if want := int64(80 + 80 + 256 + 2*512 + 16 + 16); c.TotalAll != want {
		t.Errorf("defaulted model = %d, want %d", c.TotalAll, want)
	}
}

// checkInvariants holds for every model: components add up, layers add up, active never
// exceeds total.
func checkInvariants(t *testing.T, c Counts) {
	t.Helper()
	if c.TotalAll != c.Total.Sum() || c.ActiveAll != c.Active.Sum() {
		t.Errorf("TotalAll/ActiveAll disagree with the component sums")
	}
	var layers, active int64
	for _, l := range c.Layers {
		layers += l.Total
		active += l.Active
		if l.Active > l.Total {
			t.Errorf("layer %d: active %d > total %d", l.Index, l.Active, l.Total)
		}
	}
	nonLayer := c.Total.Embedding + c.Total.Position + c.Total.Head + c.Total.RouterEmbedding
	if got := c.TotalAll - nonLayer - layers; got < 0 || got > 2*2*bD {
		t.Errorf("layers sum to %d; total minus tables minus layers = %d (should be the final norms only)", layers, got)
	}
	if c.ActiveAll > c.TotalAll {
		t.Errorf("active %d > total %d", c.ActiveAll, c.TotalAll)
	}
}
