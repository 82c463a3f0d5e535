package hf

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/format"
)

var update = flag.Bool("update", false, "rewrite testdata/import.txtar with the current output")

// published holds each fixture's known checkpoint parameter count and where it comes from.
// The fixtures in testdata/configs are the released config.json files of those models.
var published = []struct {
	file   string
	drop   []string
	params int64 // parameters of the released checkpoint
	delta  int64 // parameters a dropped field removes from the imported model
	source string
}{
	{"mixtral-8x7b.json", nil, 46_702_792_704, 0,
		"mistralai/Mixtral-8x7B-v0.1: sum of the safetensors tensor sizes (the Hub's 46.7B); also models/mixtral-8x7b.moe"},
	{"qwen1.5-moe-a2.7b.json", nil, 14_315_784_192, 0,
		"Qwen/Qwen1.5-MoE-A2.7B: the Hub's 14.3B; exact sum of its tensors (24 layers of 570,560,512, embedding and head 311,164,928 each, final norm 2,048)"},
	{"qwen3-30b-a3b.json", nil, 30_532_122_624, 0,
		"Qwen/Qwen3-30B-A3B: the Hub's 30.5B; exact sum of its tensors"},
	{"qwen3-30b-a3b-v5.json", nil, 30_532_122_624, 0,
		"Qwen/Qwen3-30B-A3B as transformers v5 writes it (rope_parameters holding rope_theta, dtype): the same model"},
	{"deepseek-v2-lite.json", nil, 15_706_484_224, 0,
		"deepseek-ai/DeepSeek-V2-Lite: the model card's 15.7B; exact sum of its tensors"},
	{"deepseek-v3.json", nil, 671_026_419_200, 0,
		"deepseek-ai/DeepSeek-V3: the report's 671B main model (MTP module apart): 671,026,404,352 parameters as compiler/analysis derives them for models/deepseek-v3.moe, plus the 58·256 = 14,848 e_score_correction_bias entries of noaux_tc routing the checkpoint stores (report.json's with_buffers)"},
	{"deepseek-moe-16b.json", nil, 16_375_728_128, 0,
		"deepseek-ai/deepseek-moe-16b-base: the Hub's 16.4B; the tensors of its modeling_deepseek.py state dict (one dense layer of 10944, 27 MoE layers of 64 routed and 2 shared experts of 1408, embedding and head 209,715,200 each)"},
	{"hunyuan-a13b.json", []string{"attention_dropout"}, 80_393_183_232, 0,
		"tencent/Hunyuan-A13B-Instruct: the model card's 80B total; the tensors of transformers' HunYuanMoEV1ForCausalLM (tied embedding, 32 layers of 64 experts and one shared MLP of 3072, per-head q/k norms); attention_dropout 0.1, training-only, dropped"},
	{"hunyuan-large.json", nil, 389_520_605_440, 0,
		"tencent/Tencent-Hunyuan-Large: the paper's 389B total (arXiv:2411.02265); the tensors of Tencent's modeling_hunyuan.py (K/V projections in 32 of 64 layers, cross-layer attention)"},
	{"phi-3.5-moe.json", []string{"input_jitter_noise"}, 41_873_153_344, 0,
		"microsoft/Phi-3.5-MoE-instruct: the model card's 41.9B (6.6B active); its config.json with the 64 longrope short and long factors replaced by placeholders (no count depends on them); input_jitter_noise, training-only, dropped"},
	{"dbrx-base.json", nil, 131_596_523_520, 0,
		"databricks/dbrx-base: the model card's 132B total (36B active); the tensors of transformers' DbrxForCausalLM (fused Wqkv, LayerNorms without bias)"},
	{"snowflake-arctic.json", nil, 478_584_608_768, 0,
		"Snowflake/snowflake-arctic-instruct: the model card's 480B total (17B active, \"a 10B dense transformer model with a residual 128x3.66B MoE MLP\"); the tensors of Snowflake's modeling_arctic.py (35 layers each of a residual MLP of 7168, 128 experts of 4864 at 104,595,456 each, and a residual_layernorm)"},
	{"llama-4-scout-17b-16e.json", nil, 107_769_861_120, 0,
		"meta-llama/Llama-4-Scout-17B-16E: the text_config of its config.json; the tensors of transformers' Llama4ForCausalLM (48 MoE layers of 16 experts and a shared expert of 8192, fused gate_up_proj). The model card's 109B total counts the vision encoder and projector too, which the language model leaves out"},
	{"llama-4-maverick-17b-128e.json", nil, 400_711_848_960, 0,
		"meta-llama/Llama-4-Maverick-17B-128E: the text_config of its config.json; the model card's 400B total (the vision encoder apart); 24 dense layers of 16384 and 24 MoE layers of 128 experts and a shared expert of 8192"},
	{"gpt-oss-20b.json", nil, 20_914_757_184, 0,
		"openai/gpt-oss-20b: the model card's 21B (the gpt-oss model card's table: 20.91B); the tensors of transformers' GptOssForCausalLM with the MXFP4 experts decoded (biased attention, 64 sinks, 32 biased experts of 2880 with fused gate_up, a biased router per layer)"},
	{"gpt-oss-120b.json", nil, 116_829_156_672, 0,
		"openai/gpt-oss-120b: the model card's 117B (116.83B in its table); 36 layers of 128 experts"},
	{"olmoe-1b-7b.json", nil, 6_919_161_856, 0,
		"allenai/OLMoE-1B-7B-0924: the paper's 6.9B; exact sum of its tensors"},
	{"llama-3-8b.json", nil, 8_030_261_248, 0,
		"meta-llama/Meta-Llama-3-8B: the Hub's 8.03B; exact sum of its tensors"},
}

func readConfig(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestImportPublished imports every fixture and checks that moec counts the checkpoint's
// parameters, that the output is canonical (formatting it again changes nothing) and that
// it matches the golden file.
func TestImportPublished(t *testing.T) {
	var out []txtar.File
	for _, p := range published {
		t.Run(p.file, func(t *testing.T) {
			res, err := ImportConfig(readConfig(t, p.file), Options{Drop: p.drop})
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			// The checkpoint holds the parameters and the routing biases (Counts.Buffers).
			if got := res.Counts.TotalAll + res.Counts.Buffers + res.ParamDelta; got != p.params {
				t.Errorf("moec total %d + buffers %d + dropped %d = %d, want the checkpoint's %d (%s)",
					res.Counts.TotalAll, res.Counts.Buffers, res.ParamDelta, got, p.params, p.source)
			}
			if res.ParamDelta != p.delta {
				t.Errorf("dropped parameters %d, want %d", res.ParamDelta, p.delta)
			}
			again, ds := format.File("x.moe", res.Source)
			if ds.HasErrors() || !bytes.Equal(again, res.Source) {
				t.Errorf("output is not canonical:\n%s", cmp.Diff(string(res.Source), string(again)))
			}
			if !bytes.Contains(res.Source, []byte(res.Class)) {
				t.Errorf("header does not name %s:\n%s", res.Class, res.Source)
			}
			name := strings.TrimSuffix(p.file, ".json") + ".moe"
			out = append(out, txtar.File{Name: name, Data: res.Source})
		})
	}
	golden.Archive(t, filepath.Join("testdata", "import.txtar"), &txtar.Archive{
		Comment: []byte("Golden output of ImportConfig for testdata/configs (go test ./interop/hf -update).\n"),
		Files:   out}, *update)
}

// TestImportActiveCounts holds the parameters one token touches to the published active
// figures, under the conventions the publishers use: with the embedding (DeepSeek-MoE's
// 2.8B, Hunyuan-A13B's 13B, Hunyuan-Large's 52B), and without the input embedding
// (report.json's no_input_embedding convention).
func TestImportActiveCounts(t *testing.T) {
	for _, tc := range []struct {
		file            string
		active, noInput int64
		published       string
	}{
		{"deepseek-moe-16b.json", 2_828_650_496, 2_618_935_296, "2.8B activated (arXiv:2401.06066)"},
		// Tied: the one matrix is the output head too, so it stays.
		{"hunyuan-a13b.json", 12_747_448_320, 12_747_448_320, "13B active (model card)"},
		{"hunyuan-large.json", 52_141_277_440, 51_318_800_640, "52B activated (arXiv:2411.02265)"},
		{"phi-3.5-moe.json", 6_640_999_744, 6_509_665_600, "6.6B active parameters (model card)"},
		{"dbrx-base.json", 36_469_708_800, 35_853_146_112, "36B active parameters (model card)"},
		{"snowflake-arctic.json", 17_318_647_808, 17_089_271_808, "17B active parameters, top-2 gating (model card)"},
		// Llama 4: one routed and the shared expert per MoE layer; "17B active" both.
		{"llama-4-scout-17b-16e.json", 17_172_894_720, 16_138_408_960, "17B active parameters (model card)"},
		{"llama-4-maverick-17b-128e.json", 17_184_691_200, 16_150_205_440, "17B active parameters (model card)"},
		// gpt-oss counts its active parameters without the input embedding (the output
		// head kept): 3.61B and 5.13B in the model card's table, the no_input_embedding figure.
		{"gpt-oss-20b.json", 4_187_440_704, 3_608_307_264, "3.6B active parameters (model card: 3.61B)"},
		{"gpt-oss-120b.json", 5_711_982_912, 5_132_849_472, "5.1B active parameters (model card: 5.13B)"},
	} {
		res, err := ImportConfig(readConfig(t, tc.file), fixtureOptions(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		c := res.Counts
		if c.ActiveAll != tc.active {
			t.Errorf("%s: active %d, want %d (%s)", tc.file, c.ActiveAll, tc.active, tc.published)
		}
		if c.ActiveNoInput != tc.noInput {
			t.Errorf("%s: active without the input embedding %d, want %d", tc.file, c.ActiveNoInput, tc.noInput)
		}
	}
}

// TestImportHunyuan: HunYuan's q/k norms follow rotary positions, Hunyuan-Large shares
// K/V across pairs of layers, and the NTK alpha scaling is resolved into the base as
// transformers resolves it (10000 · 1000^(128/126) for head_dim 128).
func TestImportHunyuan(t *testing.T) {
	for _, tc := range []struct {
		file      string
		shareKV   int
		base      float64
		normalize bool // Hunyuan-Large's top1gating weighs its one expert by its probability
	}{
		{"hunyuan-a13b.json", 1, 10000 * math.Pow(1000, 128.0/126), true},
		{"hunyuan-large.json", 2, 10000 * math.Pow(1000, 80.0/78), false},
	} {
		res, err := ImportConfig(readConfig(t, tc.file), fixtureOptions(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		a := res.Model.Attention
		if !a.QKNorm || !a.QKNormAfterRope || a.ShareKV != tc.shareKV || res.Model.RopeBase != tc.base || res.Model.RopeScaling != nil {
			t.Errorf("%s: qk_norm %v after rope %v share_kv %d base %v scaling %+v; want true true %d %v none",
				tc.file, a.QKNorm, a.QKNormAfterRope, a.ShareKV, res.Model.RopeBase, res.Model.RopeScaling, tc.shareKV, tc.base)
		}
		e := res.Model.MoE
		if e.SharedExperts != 1 || e.SharedGate || e.Normalize != tc.normalize || !e.Dropless() {
			t.Errorf("%s: shared %d gated %v normalize %v dropless %v", tc.file, e.SharedExperts, e.SharedGate, e.Normalize, e.Dropless())
		}
	}
	a13b := string(readConfig(t, "hunyuan-a13b.json"))
	// transformers' HunYuanMoEV1 has no cross-layer attention: use_cla is refused there.
	cla := strings.Replace(a13b, `"use_cla": false`, `"use_cla": true`, 1)
	if _, err := ImportConfig([]byte(cla), Options{Drop: []string{"attention_dropout", "use_cla"}}); err == nil || !strings.Contains(err.Error(), "cannot be dropped") {
		t.Errorf("use_cla in hunyuan_v1_moe: err = %v", err)
	}
}

// TestImportFullQKNormAndSharedGate checks that OLMoE's whole-projection q/k norms and
// Qwen1.5/Qwen2-MoE's shared-expert gate arrive as qk_norm = full and shared_gate, and
// that neither appears where the architecture has no such thing.
func TestImportFullQKNormAndSharedGate(t *testing.T) {
	for _, tc := range []struct {
		file                      string
		qkNorm, qkNormFull, gated bool
	}{
		{"olmoe-1b-7b.json", true, true, false},
		{"qwen1.5-moe-a2.7b.json", false, false, true},
		{"qwen3-30b-a3b.json", true, false, false},
		{"mixtral-8x7b.json", false, false, false},
	} {
		res, err := ImportConfig(readConfig(t, tc.file), Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		a, e := res.Model.Attention, res.Model.MoE
		if a.QKNorm != tc.qkNorm || a.QKNormFull != tc.qkNormFull || e == nil || e.SharedGate != tc.gated {
			t.Errorf("%s: qk_norm %v full %v, shared_gate %v; want %v %v %v", tc.file, a.QKNorm, a.QKNormFull, e != nil && e.SharedGate,
				tc.qkNorm, tc.qkNormFull, tc.gated)
		}
		if res.ParamDelta != 0 {
			t.Errorf("%s: %d parameters dropped", tc.file, res.ParamDelta)
		}
	}
}

// TestImportRefusesWhatItCannotExpress checks that inexpressible fields are errors that
// name the field, never silently dropped, that the error lists all of them, and that only
// a field whose absence leaves the numbers the same is offered to --drop.
func TestImportRefusesWhatItCannotExpress(t *testing.T) {
	edit := mixtralEdit(t)
	for _, tc := range []struct {
		name      string
		config    []byte
		fields    []string // every field the error must name
		droppable []bool
	}{
		{"activation and dropout", bytes.Replace(edit(`"attention_dropout": 0.0`, `"attention_dropout": 0.1`), []byte(`"silu"`), []byte(`"gelu_new"`), 1),
			[]string{"hidden_act", "attention_dropout"}, []bool{false, true}},
		{"unknown field", edit(`"use_cache": true`, `"use_cache": true, "expert_dropout": 0.1`),
			[]string{"expert_dropout"}, []bool{false}},
	} {
		_, err := ImportConfig(tc.config, Options{})
		e, ok := err.(*Error)
		if !ok {
			t.Fatalf("%s: err = %v, want *Error", tc.name, err)
		}
		var got []string
		var drop []bool
		for _, is := range e.Issues {
			got = append(got, is.Field)
			drop = append(drop, is.Droppable)
			if is.Code != diag.CodeInexpressible {
				t.Errorf("%s: %s: code %s", tc.name, is.Field, is.Code)
			}
		}
		if d := cmp.Diff(tc.fields, got); d != "" {
			t.Errorf("%s: fields (-want +got):\n%s", tc.name, d)
		}
		if d := cmp.Diff(tc.droppable, drop); d != "" {
			t.Errorf("%s: droppable (-want +got):\n%s", tc.name, d)
		}
	}
}

// TestDropNeverChangesTheComputation: --drop of a field moec imports (rope_parameters,
// rope_scaling, routed_scaling_factor) or of one whose absence changes the numbers
// (hidden_act) is refused with the reason, never honoured.
func TestDropNeverChangesTheComputation(t *testing.T) {
	edit := mixtralEdit(t)
	for _, tc := range []struct {
		file   string
		config []byte
		drop   string
		want   string
	}{
		{"qwen3-30b-a3b-v5.json", nil, "rope_parameters", "dropping it would change the computation"},
		{"deepseek-v3.json", nil, "rope_scaling", "dropping it would change the computation"},
		{"deepseek-v3.json", nil, "routed_scaling_factor", "dropping it would change the computation"},
		{"gelu", edit(`"silu"`, `"gelu_new"`), "hidden_act", "cannot be dropped"},
	} {
		cfg := tc.config
		if cfg == nil {
			cfg = readConfig(t, tc.file)
		}
		_, err := ImportConfig(cfg, Options{Drop: []string{tc.drop}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s --drop %s: err = %v, want one saying %q", tc.file, tc.drop, err, tc.want)
		}
	}
}

// TestImportV5RopeParameters: transformers v5's rope_parameters (rope_theta inside) and
// dtype import as v4's rope_theta and torch_dtype do.
func TestImportV5RopeParameters(t *testing.T) {
	res, err := ImportConfig(readConfig(t, "qwen3-30b-a3b-v5.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model.RopeBase != 1e6 || res.Model.RopeScaling != nil {
		t.Errorf("rope_base %v scaling %+v, want 1e6 and none", res.Model.RopeBase, res.Model.RopeScaling)
	}
	v4, err := ImportConfig(readConfig(t, "qwen3-30b-a3b.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Source, v4.Source) {
		t.Errorf("v5 and v4 forms of one model import differently:\n%s", cmp.Diff(string(v4.Source), string(res.Source)))
	}
}

// TestImportRopeScaling: yarn and llama3 arrive as rope_scaling with transformers'
// parameters, yarn's factor as transformers derives it.
func TestImportRopeScaling(t *testing.T) {
	res, err := ImportConfig(readConfig(t, "deepseek-v2-lite.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs := res.Model.RopeScaling
	want := &program.RopeScaling{Type: program.RopeYarn, Factor: 40, OriginalSeqLen: 4096, BetaFast: 32, BetaSlow: 1, Mscale: 0.707, MscaleAllDim: 0.707}
	if d := cmp.Diff(want, rs); d != "" {
		t.Errorf("yarn (-want +got):\n%s", d)
	}
	edit := mixtralEdit(t)
	res, err = ImportConfig(edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 8192}`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want = &program.RopeScaling{Type: program.RopeLlama3, Factor: 8, OriginalSeqLen: 8192, LowFreqFactor: 1, HighFreqFactor: 4}
	if d := cmp.Diff(want, res.Model.RopeScaling); d != "" {
		t.Errorf("llama3 (-want +got):\n%s", d)
	}
	v3, err := ImportConfig(readConfig(t, "deepseek-v3.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Model.MoE.RoutedScale != 2.5 {
		t.Errorf("routed_scale %v, want 2.5", v3.Model.MoE.RoutedScale)
	}
}

func TestImportErrors(t *testing.T) {
	edit := mixtralEdit(t)
	for _, tc := range []struct {
		name   string
		config []byte
		code   diag.Code
		want   []string // substrings of the message
	}{
		{"unknown rope type", edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"type": "wobbly", "factor": 2}`),
			diag.CodeBadHFConfig, []string{"rope_scaling", `unknown rope type "wobbly"`, "yarn"}},
		{"incomplete llama3", edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"rope_type": "llama3", "factor": 8, "original_max_position_embeddings": 8192}`),
			diag.CodeBadHFConfig, []string{"rope_scaling", "llama3 scaling needs low_freq_factor"}},
		{"longrope", edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"rope_type": "longrope", "short_factor": [1], "long_factor": [2], "original_max_position_embeddings": 4096, "short_mscale": 1.1, "long_mscale": 1.2}`),
			diag.CodeInexpressible, []string{"rope_scaling", "short_mscale 1.1 and long_mscale 1.2", "cannot be dropped"}},
		{"rope key", edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"rope_type": "linear", "factor": 2, "beta_fast": 4}`),
			diag.CodeInexpressible, []string{"rope_scaling", "key(s) beta_fast"}},
		{"unknown field", edit(`"use_cache": true`, `"use_cache": true, "expert_dropout": 0.1`),
			diag.CodeInexpressible, []string{"expert_dropout", "unknown field (value 0.1)"}},
		{"misspelt field", edit(`"use_cache": true`, `"use_cache": true, "num_experts_per_token": 2`),
			diag.CodeInexpressible, []string{"num_experts_per_token", "did you mean num_experts_per_tok"}},
		{"both rope forms", edit(`"sliding_window": null`, `"sliding_window": null, "rope_scaling": {"rope_type": "linear", "factor": 2}, "rope_parameters": {"rope_theta": 1e6}`),
			diag.CodeBadHFConfig, []string{"both rope_scaling and rope_parameters"}},
		{"activation", edit(`"silu"`, `"gelu_new"`), diag.CodeInexpressible, []string{"hidden_act", `"gelu_new"`}},
		{"dropout", edit(`"attention_dropout": 0.0`, `"attention_dropout": 0.1`), diag.CodeInexpressible, []string{"attention_dropout"}},
		{"type", edit(`"num_hidden_layers": 32`, `"num_hidden_layers": "32"`), diag.CodeBadHFConfig, []string{"num_hidden_layers: want a number"}},
		{"missing", edit(`"num_local_experts": 8,`, ``), diag.CodeBadHFConfig, []string{"num_local_experts: missing"}},
		{"architecture", edit(`"model_type": "mixtral"`, `"model_type": "mixtrall"`), diag.CodeUnknownArchitecture, []string{`"mixtrall"`, `did you mean "mixtral"?`}},
		{"not json", []byte(`[1, 2]`), diag.CodeBadHFConfig, []string{"not a JSON object"}},
		{"partial window", edit(`"sliding_window": null`, `"sliding_window": 4096, "max_window_layers": 28`),
			diag.CodeInexpressible, []string{"max_window_layers", "a sliding window of 4096 only from layer 28 on"}},
		{"encoder-decoder", edit(`"use_cache": true`, `"use_cache": true, "is_encoder_decoder": true`), diag.CodeInexpressible, []string{"is_encoder_decoder"}},
		{"moec rule", edit(`"num_attention_heads": 32`, `"num_attention_heads": 30`), diag.CodeBadHFConfig, []string{"does not pass moec check"}},
	} {
		_, err := ImportConfig(tc.config, Options{})
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		// errors.As reaches a *diag.Diagnostic in every refusal, a list of fields included.
		if code := diag.CodeOf(err); code != tc.code {
			t.Errorf("%s: code %s, want %s (%v)", tc.name, diag.CodeOf(err), tc.code, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", tc.name, w, err)
			}
		}
	}
}

// Refusals name the file the user gave, say each problem once, and a --drop that names
// nothing droppable is an error listing what can be dropped.
func TestImportMessages(t *testing.T) {
	edit := mixtralEdit(t)
	for _, tc := range []struct {
		name   string
		config []byte
		drop   []string
		want   []string
		issues int // 0: not an *Error
	}{
		{"array", []byte(`[1, 2]`), nil, []string{"imp/bad.json is not a JSON object", "a JSON array"}, 0},
		{"empty model_type", edit(`"model_type": "mixtral"`, `"model_type": ""`), nil, []string{"imp/bad.json has no model_type"}, 0},
		{"negative", edit(`"hidden_size": 4096`, `"hidden_size": -5`), nil, []string{"imp/bad.json:", "hidden_size: want a positive integer, have -5"}, 1},
		{"drop absent", readConfig(t, "mixtral-8x7b.json"), []string{"bogus_field"}, []string{"bogus_field: --drop names a field imp/bad.json does not have", "no field to drop"}, 1},
		{"drop imported", readConfig(t, "mixtral-8x7b.json"), []string{"hidden_size"}, []string{"hidden_size: --drop names a field moec imports as it is"}, 1},
		{"drop lists", edit(`"attention_dropout": 0.0`, `"attention_dropout": 0.1`), []string{"attention_dropout", "bogus"}, []string{"this config can drop attention_dropout"}, 1},
	} {
		_, err := ImportConfig(tc.config, Options{Source: "imp/bad.json", Drop: tc.drop})
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", tc.name, w, err)
			}
		}
		if strings.Contains(err.Error(), "config.json") {
			t.Errorf("%s: names config.json, not the file given:\n%v", tc.name, err)
		}
		if e, ok := err.(*Error); ok != (tc.issues > 0) || ok && len(e.Issues) != tc.issues {
			t.Errorf("%s: want %d issue(s):\n%v", tc.name, tc.issues, err)
		}
	}
	// Dropping a field the config holds as null changes nothing and is accepted.
	if _, err := ImportConfig(readConfig(t, "llama-3-8b.json"), Options{Drop: []string{"rope_scaling"}}); err != nil {
		t.Errorf("drop of a null field: %v", err)
	}
}

// TestDropNotesTheField checks that a dropped field is written into the header.
func TestDropNotesTheField(t *testing.T) {
	edit := mixtralEdit(t)
	res, err := ImportConfig(edit(`"attention_dropout": 0.0`, `"attention_dropout": 0.1`), Options{Drop: []string{"attention_dropout"}, Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	// Runs of spaces are the formatter's alignment of `=`, not content.
	src := regexp.MustCompile(` +`).ReplaceAll(res.Source, []byte(" "))
	for _, w := range []string{"// dropped attention_dropout: attention dropout 0.1", "model m {"} {
		if !bytes.Contains(src, []byte(w)) {
			t.Errorf("output lacks %q:\n%s", w, res.Source)
		}
	}
}

// TestImportWindow checks that a sliding window on every layer is imported as window.
func TestImportWindow(t *testing.T) {
	cfg := strings.Replace(string(readConfig(t, "mixtral-8x7b.json")), `"sliding_window": null`, `"sliding_window": 4096`, 1)
	res, err := ImportConfig([]byte(cfg), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model.Attention.Window != 4096 {
		t.Errorf("window = %d, want 4096", res.Model.Attention.Window)
	}
}

func TestRuleFor(t *testing.T) {
	for _, tc := range []struct {
		layers       []int
		n            int
		every, first int
		ok           bool
	}{
		{[]int{0, 1, 2, 3}, 4, 1, 0, true},
		{[]int{3, 4, 5}, 6, 1, 3, true},
		{[]int{1, 3, 5}, 6, 2, 0, true},
		{[]int{2, 5}, 6, 3, 0, true},
		{[]int{0, 2, 4}, 6, 0, 0, false}, // DeepSeek's moe_layer_freq 2: layer 0 is MoE
		{[]int{5}, 6, 1, 5, true},
		{[]int{2}, 6, 0, 0, false},
		{[]int{1, 2, 4}, 6, 0, 0, false},
	} {
		every, first, ok := ruleFor(tc.layers, tc.n)
		if every != tc.every || first != tc.first || ok != tc.ok {
			t.Errorf("ruleFor(%v, %d) = %d, %d, %v; want %d, %d, %v", tc.layers, tc.n, every, first, ok, tc.every, tc.first, tc.ok)
		}
	}
}

// FuzzImportConfig checks that no config.json makes the import panic: every outcome is a
// result that passed moec check or an error.
func FuzzImportConfig(f *testing.F) {
	for _, p := range published {
		b, err := os.ReadFile(filepath.Join("testdata", "configs", p.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"model_type": "mixtral", "num_hidden_layers": 1e300}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ImportConfig(b, Options{Drop: []string{"attention_dropout"}})
		if err == nil && (res == nil || res.Model == nil || len(res.Source) == 0) {
			t.Fatalf("no error and no result")
		}
	})
}

// mixtralEdit returns the Mixtral fixture with one substring replaced, failing the test
// when the fixture lacks it.
func mixtralEdit(t *testing.T) func(old, new string) []byte {
	mixtral := string(readConfig(t, "mixtral-8x7b.json"))
	return func(old, new string) []byte {
		if !strings.Contains(mixtral, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return []byte(strings.Replace(mixtral, old, new, 1))
	}
}

// editedConfig is the config file in testdata with edits applied (nil deletes a key).
func editedConfig(t *testing.T, file string, edits map[string]any) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(readConfig(t, file), &cfg); err != nil {
		t.Fatal(err)
	}
	for k, v := range edits {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
