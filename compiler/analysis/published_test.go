package analysis

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// The published models, built in Go as compiler/check would resolve them from models/*.moe.
// Literals on purpose: each is its published config, field by field, counted apart from the
// checker (models_test.go holds models/*.moe, through the checker, to the same counts).

// mixtral8x7b is mistralai/Mixtral-8x7B-v0.1 config.json.
func mixtral8x7b() *program.Model {
	return &program.Model{
		Name: "mixtral", Vocab: 32000, DModel: 4096, Layers: 32, SeqLen: 32768,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, RopeBase: 1e6,
		Attention: program.Attention{Heads: 32, KVHeads: 8, HeadDim: 128, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: 14336, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 8, TopK: 2, ExpertHidden: 14336, Activation: program.SwiGLU,
			Every: 1, Router: program.RouteHidden, Score: program.Softmax, Normalize: true},
	}
}

// deepseekV3 is deepseek-ai/DeepSeek-V3 config.json.
func deepseekV3() *program.Model {
	return &program.Model{
		Name: "deepseek_v3", Vocab: 129280, DModel: 7168, Layers: 61, SeqLen: 4096,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, MTPDepth: 1,
		Attention: program.Attention{Heads: 128, KVHeads: 128, MLA: true, QLoraRank: 1536, KVLoraRank: 512,
			QKNopeHeadDim: 128, QKRopeHeadDim: 64, VHeadDim: 128, ShareWeights: 1, ShareKV: 1},
		FFN: program.FFN{Hidden: 18432, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 256, TopK: 8, ExpertHidden: 2048, Activation: program.SwiGLU,
			SharedExperts: 1, SharedHidden: 2048, Every: 1, FirstDense: 3,
			Router: program.RouteHidden, Score: program.Sigmoid, Normalize: true,
			AuxFreeBias: 0.001, Groups: 8, TopKGroups: 4},
	}
}

// switchC2048 is google/switch-c-2048 (Fedus et al. 2021, Table 9).
func switchC2048() *program.Model {
	return &program.Model{
		Name: "switch_c", Vocab: 32128, DModel: 2080, Layers: 15, Encoder: 15, SeqLen: 512,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position:  program.Relative,
		Attention: program.Attention{Heads: 32, KVHeads: 32, HeadDim: 64, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: 6144, Activation: program.ReLU},
		MoE: &program.MoE{Experts: 2048, TopK: 1, ExpertHidden: 6144, Activation: program.ReLU,
			Every: 1, EncoderMoE: true, Router: program.RouteHidden, Score: program.Softmax},
	}
}

func within(t *testing.T, what string, got int64, want float64, tol float64) {
	t.Helper()
	if rel := math.Abs(float64(got)-want) / want; rel > tol {
		t.Errorf("%s = %d (%.4gB), want %.4gB within %.2f%% (off by %.3f%%)", what, got, float64(got)/1e9, want/1e9, tol*100, rel*100)
	}
}

func TestPublishedMixtral(t *testing.T) {
	c := Count(mixtral8x7b())
	if c.TotalAll != 46702792704 {
		t.Errorf("Mixtral total = %d, want 46702792704 (Hugging Face parameter count)", c.TotalAll)
	}
	within(t, "Mixtral total", c.TotalAll, 46.7e9, 0.005)
	within(t, "Mixtral active", c.ActiveAll, 12.9e9, 0.005)
	t.Logf("mixtral total %d active %d", c.TotalAll, c.ActiveAll)
}

func TestPublishedDeepSeekV3(t *testing.T) {
	c := Count(deepseekV3())
	within(t, "DeepSeek-V3 total", c.TotalAll, 671e9, 0.005)
	// Our exact counts, derived component by component (see count.go); the aux-free
	// e_score_correction_bias (256 per MoE layer, 58 layers) is a buffer, not a parameter.
	if c.TotalAll != 671026404352 || c.Buffers != 58*256 {
		t.Errorf("DeepSeek-V3 total = %d + %d buffers, want 671026404352 + 14848", c.TotalAll, c.Buffers)
	}
	// DeepSeek counts activated parameters without the input embedding lookup, the output
	// head in: README_WEIGHTS.md of deepseek-ai/DeepSeek-V3 gives the main model 36.6B
	// activated "including 0.9B for the output Head", the report's "37B" rounds the same
	// count. Embedding included, one token touches 37.55B.
	if c.ActiveNoInput != 36625603584 || math.Round(float64(c.ActiveNoInput)/1e8) != 366 {
		t.Errorf("DeepSeek-V3 active without the input embedding = %d, want 36625603584 (README_WEIGHTS.md: 36.6B)", c.ActiveNoInput)
	}
	if c.ActiveAll != 37552282624 {
		t.Errorf("DeepSeek-V3 active = %d, want 37552282624", c.ActiveAll)
	}
	// The MTP module: one MoE layer (11.5B with its 256 experts) + eh_proj + 3 norms.
	within(t, "DeepSeek-V3 MTP", c.MTP, 11.6e9, 0.005)
	// README_WEIGHTS.md states the MTP module as 11.5B unique parameters and 1.5B activated
	// (the 0.9B output head included): both leave out eh_proj, the 7168×14336 projection
	// of the concatenated norms the checkpoint stores (model.layers.61.eh_proj.weight).
	ehProj := int64(7168 * 2 * 7168)
	if mtp, act := c.MTP-ehProj, c.MTPActive-ehProj+c.Total.Head; math.Round(float64(mtp)/1e8) != 115 || math.Round(float64(act)/1e8) != 15 {
		t.Errorf("DeepSeek-V3 MTP without eh_proj = %d total, %d active with the head; README_WEIGHTS.md: 11.5B and 1.5B", mtp, act)
	}
	if got := c.TotalAll + c.MTP + c.Total.Embedding + c.Total.Head; got/1e9 != 684 {
		// The released checkpoint (685B by its model card, rounded up) stores the main model,
		// the MTP module and second copies of the embedding and head for the MTP module.
		t.Errorf("DeepSeek-V3 checkpoint = %d, want 684.xB", got)
	}
}

func TestPublishedSwitchC(t *testing.T) {
	c := Count(switchC2048())
	within(t, "Switch-C total", c.TotalAll, 1571e9, 0.005)
	t.Logf("switch total %d active %d", c.TotalAll, c.ActiveAll)
}

// qwen3MoE is Qwen/Qwen3-30B-A3B config.json: head_dim 128 independent of d_model (32 heads
// × 128 = 4096 ≠ 2048), GQA with 4 K/V heads, per-head q/k RMSNorms, 128 experts of 768.
func qwen3MoE() *program.Model {
	return &program.Model{
		Name: "qwen3_30b_a3b", Vocab: 151936, DModel: 2048, Layers: 48, SeqLen: 4096,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true, Position: program.Rotary,
		Attention: program.Attention{Heads: 32, KVHeads: 4, HeadDim: 128, QKNorm: true, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: 6144, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 128, TopK: 8, ExpertHidden: 768, Activation: program.SwiGLU, Every: 1,
			Router: program.RouteHidden, Normalize: true},
	}
}

func TestPublishedQwen3MoE(t *testing.T) {
	c := Count(qwen3MoE())
	within(t, "Qwen3-30B-A3B total", c.TotalAll, 30.5e9, 0.005)
	if c.TotalAll != 30532122624 {
		t.Errorf("Qwen3-30B-A3B total = %d, want 30532122624", c.TotalAll)
	}
	// Published "3.3B activated" is truncated like DeepSeek's: the count is 3.35B.
	if c.ActiveAll != 3353032704 {
		t.Errorf("Qwen3-30B-A3B active = %d, want 3353032704", c.ActiveAll)
	}
}
