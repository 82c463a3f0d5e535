package hf

import (
	"fmt"
	"math"
	"testing"
)

// fixtureDrops are the fields a published fixture needs dropped to import: settings that
// act in training only, which moec notes rather than drops silently.
var fixtureDrops = map[string][]string{
	"phi-3.5-moe.json":  {"input_jitter_noise"},
	"hunyuan-a13b.json": {"attention_dropout"},
}

// fixtureOptions imports a published fixture as it is, with only its fixtureDrops.
func fixtureOptions(file string) Options { return Options{Drop: fixtureDrops[file]} }

// countConvention picks one of report.json's conventions (or a part Snowflake names)
// out of an import.
type countConvention struct {
	name string
	of   func(res *Result) int64
}

var (
	totalAll    = countConvention{"total", func(res *Result) int64 { return res.Counts.TotalAll }}
	activeAll   = countConvention{"active", func(res *Result) int64 { return res.Counts.ActiveAll }}
	activeNoIn  = countConvention{"active without the input embedding", func(res *Result) int64 { return res.Counts.ActiveNoInput }}
	totalNoEmb  = countConvention{"total without embeddings", func(res *Result) int64 { return res.Counts.TotalNoEmbedding }}
	activeNoEmb = countConvention{"active without embeddings", func(res *Result) int64 { return res.Counts.ActiveNoEmbedding }}
	nonExpert   = countConvention{"total without the routed experts", func(res *Result) int64 {
		return res.Counts.TotalAll - res.Counts.Total.RoutedExperts
	}}
	perExpert = countConvention{"routed experts per expert index, over all layers", func(res *Result) int64 {
		return res.Counts.Total.RoutedExperts / int64(res.Model.MoE.Experts)
	}}
)

// figure is a parameter count as its publisher prints it: billions, to a step (0.01, 0.1,
// 1, 10), rounded or truncated to it.
type figure struct {
	billions, step float64
	truncated      bool
}

func (f figure) String() string {
	s := fmt.Sprintf("%gB", f.billions)
	if f.truncated {
		s += " (truncated)"
	}
	return s
}

// holds reports whether count, printed the publisher's way, is the figure.
func (f figure) holds(count int64) bool {
	x := float64(count) / (f.step * 1e9)
	if f.truncated {
		x = math.Floor(x)
	} else {
		x = math.Round(x)
	}
	return x == math.Round(f.billions/f.step)
}

// TestPublisherFigures holds every family's imported counts to the figures its publisher
// states, under the convention the publisher counts by: the whole model, without the
// input embedding (DeepSeek, gpt-oss), without embeddings (Qwen's non-embedding figures),
// MTP modules apart (DeepSeek-V3). TestImportPublished holds the same fixtures to the
// exact sums of the released tensors; this test holds them to what people read.
func TestPublisherFigures(t *testing.T) {
	type claim struct {
		convention countConvention
		figure     figure
	}
	for _, tc := range []struct {
		file   string
		claims []claim
		source string
	}{
		{"mixtral-8x7b.json", []claim{{totalAll, figure{46.7, 0.1, false}}, {activeAll, figure{12.9, 0.1, false}}},
			"Mistral AI, \"Mixtral of experts\" (mistral.ai/news/mixtral-of-experts): 46.7B total parameters, 12.9B used per token"},
		{"qwen1.5-moe-a2.7b.json", []claim{{totalAll, figure{14.3, 0.1, false}}, {activeAll, figure{2.7, 0.1, false}}, {activeNoEmb, figure{2, 1, false}}},
			"Qwen/Qwen1.5-MoE-A2.7B model card: 14.3B parameters in total, 2.7B activated; Qwen blog \"Qwen1.5-MoE: Matching 7B Model Performance with 1/3 Activated Parameters\" (qwenlm.github.io/blog/qwen-moe): 2 billion non-embedding parameters"},
		// Qwen3 prints its figures cut, not rounded: 3.35B activated is "3.3B".
		{"qwen3-30b-a3b.json", []claim{{totalAll, figure{30.5, 0.1, true}}, {activeAll, figure{3.3, 0.1, true}}, {totalNoEmb, figure{29.9, 0.1, true}}},
			"Qwen/Qwen3-30B-A3B model card: 30.5B in total and 3.3B activated; 29.9B non-embedding"},
		{"qwen3-30b-a3b-v5.json", []claim{{totalAll, figure{30.5, 0.1, true}}, {activeAll, figure{3.3, 0.1, true}}, {totalNoEmb, figure{29.9, 0.1, true}}},
			"the same model card; the transformers 5 form of the same config"},
		{"olmoe-1b-7b.json", []claim{{totalAll, figure{6.9, 0.1, false}}, {activeAll, figure{1.3, 0.1, false}}},
			"OLMoE paper (arXiv:2409.02060), table 1: 1.3B active and 6.9B total parameters"},
		{"deepseek-moe-16b.json", []claim{{totalAll, figure{16.4, 0.1, false}}, {activeAll, figure{2.8, 0.1, false}}},
			"DeepSeekMoE paper (arXiv:2401.06066): DeepSeekMoE 16B, 16.4B total, 2.8B activated (embedding included)"},
		// DeepSeek-V2 and V3 count activated parameters without the input embedding lookup
		// (the output head in), and cut the figure: 2.45B is "2.4B".
		{"deepseek-v2-lite.json", []claim{{totalAll, figure{15.7, 0.1, true}}, {activeNoIn, figure{2.4, 0.1, true}}},
			"DeepSeek-V2 paper (arXiv:2405.04434), DeepSeek-V2-Lite: 15.7B total parameters, 2.4B activated"},
		{"deepseek-v3.json", []claim{{totalAll, figure{671, 1, false}}, {activeNoIn, figure{37, 1, false}}, {activeNoIn, figure{36.6, 0.1, false}}},
			"DeepSeek-V3 technical report (arXiv:2412.19437): 671B total, 37B activated, MTP apart; README_WEIGHTS.md of deepseek-ai/DeepSeek-V3: main model 671B, 36.6B activated including the 0.9B output head"},
		// Tencent cuts too: 389.5B total is "389B"; untied, the 52.1B active count is "52B".
		{"hunyuan-large.json", []claim{{totalAll, figure{389, 1, true}}, {activeAll, figure{52, 1, true}}},
			"Hunyuan-Large paper (arXiv:2411.02265) and the Tencent-Hunyuan-Large README: 389B total, 52B activated"},
		{"hunyuan-a13b.json", []claim{{totalAll, figure{80, 1, false}}, {activeAll, figure{13, 1, false}}},
			"tencent/Hunyuan-A13B-Instruct model card: 80 billion total, 13 billion active parameters"},
		{"phi-3.5-moe.json", []claim{{totalAll, figure{42, 1, false}}, {activeAll, figure{6.6, 0.1, false}}},
			"microsoft/Phi-3.5-MoE-instruct model card: 16x3.8B experts, 42B parameters, 6.6B active with 2 experts"},
		{"dbrx-base.json", []claim{{totalAll, figure{132, 1, false}}, {activeAll, figure{36, 1, false}}},
			"databricks/dbrx-base model card: 132B total parameters, 36B active on any input"},
		// Snowflake states Arctic as a 10B dense transformer with a residual 128×3.66B MoE
		// MLP: 480B total (two significant figures), 17B active.
		{"snowflake-arctic.json", []claim{{totalAll, figure{480, 10, false}}, {activeAll, figure{17, 1, false}}, {nonExpert, figure{10, 1, false}}, {perExpert, figure{3.66, 0.01, false}}},
			"Snowflake/snowflake-arctic-instruct model card: \"a 10B dense transformer model with a residual 128x3.66B MoE MLP resulting in 480B total and 17B active parameters\""},
		// Meta's totals count the vision encoder beside the language model this config
		// holds: Scout's 109B is the language model's 107.8B and the encoder; Maverick's
		// "400B" holds to two significant figures with or without it.
		{"llama-4-scout-17b-16e.json", []claim{{activeAll, figure{17, 1, false}}},
			"meta-llama/Llama-4-Scout-17B-16E model card: 17B active parameters (109B total with the vision encoder)"},
		{"llama-4-maverick-17b-128e.json", []claim{{totalAll, figure{400, 10, false}}, {activeAll, figure{17, 1, false}}},
			"meta-llama/Llama-4-Maverick-17B-128E model card: 17B active, 400B total parameters"},
		// OpenAI counts active parameters without the input embedding (the unembedding in).
		{"gpt-oss-20b.json", []claim{{totalAll, figure{20.91, 0.01, false}}, {activeNoIn, figure{3.61, 0.01, false}}},
			"gpt-oss model card (arXiv:2508.10925), table 1: gpt-oss-20b, 20.91B total, 3.61B active"},
		{"gpt-oss-120b.json", []claim{{totalAll, figure{116.83, 0.01, false}}, {activeNoIn, figure{5.13, 0.01, false}}},
			"gpt-oss model card (arXiv:2508.10925), table 1: gpt-oss-120b, 116.83B total, 5.13B active"},
		{"llama-3-8b.json", []claim{{totalAll, figure{8, 1, false}}, {activeAll, figure{8, 1, false}}},
			"meta-llama/Meta-Llama-3-8B model card: 8B (dense: every parameter is active)"},
	} {
		res, err := ImportConfig(readConfig(t, tc.file), fixtureOptions(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		for _, cl := range tc.claims {
			got := cl.convention.of(res)
			if !cl.figure.holds(got) {
				t.Errorf("%s: %s %d (%.3fB), published %s (%s)", tc.file, cl.convention.name, got, float64(got)/1e9, cl.figure, tc.source)
			}
		}
	}
}

// TestFigureRounding: a figure cut by its publisher is not one rounded, and the reverse.
func TestFigureRounding(t *testing.T) {
	for _, tc := range []struct {
		count int64
		f     figure
		want  bool
	}{
		{3_353_032_704, figure{3.3, 0.1, true}, true},
		{3_353_032_704, figure{3.3, 0.1, false}, false},
		{3_353_032_704, figure{3.4, 0.1, false}, true},
		{478_584_608_768, figure{480, 10, false}, true},
		{478_584_608_768, figure{480, 1, false}, false},
	} {
		if got := tc.f.holds(tc.count); got != tc.want {
			t.Errorf("%d as %v: %v, want %v", tc.count, tc.f, got, tc.want)
		}
	}
}
