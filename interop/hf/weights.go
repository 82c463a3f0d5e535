package hf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// weightLayouts are the model types whose weights ImportCheckpoint converts: those whose
// tensors moec's runtime holds one for one.
var weightLayouts = map[string]Layout{
	"llama": LayoutLlama, "mistral": LayoutLlama, "qwen2": LayoutLlama,
	"qwen3": LayoutQwen3, "mixtral": LayoutMixtral, "qwen3_moe": LayoutQwen3MoE,
	"olmoe": LayoutOlmoe, "qwen2_moe": LayoutQwen2MoE, "arctic": LayoutArctic, "gpt_oss": LayoutGptOss, "llama4_text": LayoutLlama4,
	"deepseek_v3": LayoutDeepSeek, "deepseek_v2": LayoutDeepSeek, // the same names; V2's router has no selection bias
	"deepseek":       LayoutDeepSeekMoE, // DeepSeek-MoE 16B: Llama attention, V2's MoE names
	"hunyuan_v1_moe": LayoutHunyuanMoE, "hunyuan": LayoutHunyuan,
	"dbrx": LayoutDbrx, "phimoe": LayoutPhimoe,
}

// CheckpointResult is an imported Hugging Face folder.
type CheckpointResult struct {
	*Result
	Checkpoint string // the checkpoint directory written
	SourceFile string // the .moe file written beside it
	Tensors    int
}

// ImportCheckpoint converts the Hugging Face folder hfDir (config.json and *.safetensors)
// into out: out/NAME.moe (the imported model) and a moec checkpoint under
// out/checkpoints, which `moec eval`, `moec generate` and Export read. out must be absent
// or empty. Every tensor of the
// folder must be one of the model's, with its shape, and every one of the model's present.
func ImportCheckpoint(hfDir, out string, opt Options) (*CheckpointResult, error) {
	cfg, err := os.ReadFile(filepath.Join(hfDir, ConfigFile))
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "reading the Hugging Face folder %s", hfDir)
	}
	res, err := ImportConfig(cfg, opt)
	if err != nil {
		return nil, err
	}
	layout, ok := weightLayouts[res.ModelType]
	if !ok {
		known := make([]string, 0, len(weightLayouts))
		for k := range weightLayouts {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, diag.Runtimef(diag.CodeWeightsMismatch, "weights of model_type %s cannot be imported yet: moec's runtime holds the tensors of %s; import the config alone (without --checkpoint) to count and plan it", res.ModelType, strings.Join(known, ", "))
	}
	if layout == LayoutDeepSeek && res.Model.MTPDepth > 0 {
		return nil, diag.Runtimef(diag.CodeWeightsMismatch, "the multi-token prediction module (num_nextn_predict_layers = %d: model.layers.%d and after) cannot be imported: moec's runtime holds no MTP weights (transformers ignores them too); set num_nextn_predict_layers to 0 in a copy of config.json and leave those tensors out of its safetensors to import the main model", res.Model.MTPDepth, res.Model.Layers)
	}
	if res.ParamDelta != 0 {
		return nil, diag.Runtimef(diag.CodeWeightsMismatch, "a dropped field removed %d parameters, so the weights do not fit the imported model", res.ParamDelta)
	}
	files, err := filepath.Glob(filepath.Join(hfDir, "*.safetensors"))
	if err != nil || len(files) == 0 {
		return nil, diag.Runtimef(diag.CodeWeightsMismatch, "%s has no *.safetensors file", hfDir)
	}
	sort.Strings(files)
	// Rotary inverse frequencies are a buffer some older checkpoints saved; tied models
	// sometimes save the head too. Neither is a parameter of its own.
	skip := func(name string) bool {
		return strings.HasSuffix(name, "rotary_emb.inv_freq") || (res.Model.TieEmbeddings && name == "lm_head.weight")
	}
	var ts []safetensors.Tensor
	if layout == LayoutGptOss {
		if ts, err = readGptOss(files, skip); err != nil {
			return nil, err
		}
		files = nil // read
	} else if block, ok := fp8BlockOf(cfg); ok {
		if ts, err = readFP8(files, block, skip, layout); err != nil {
			return nil, err
		}
		files = nil // read
	}
	for _, f := range files {
		sf, err := safetensors.ReadFile(f)
		if err != nil {
			if d := fp8WithoutConfig(f); d != nil {
				return nil, d
			}
			return nil, diag.RuntimeWrap(diag.CodeBadSafetensors, err, "reading weights")
		}
		for _, t := range sf.Tensors {
			if skip(t.Name) {
				continue
			}
			t.Name = toMoec(layout, t.Name)
			ts = append(ts, t)
		}
	}
	if layout == LayoutDeepSeek || layout == LayoutDeepSeekMoE {
		// DeepSeek-MoE's Llama attention rotates halves, as moec does: no rope rows to permute.
		if ts, err = deepseekToMoec(ts, res.Model, layout == LayoutDeepSeek && ropeInterleaved(cfg)); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "the weights in %s do not fit its config.json", hfDir)
		}
	}
	if layout == LayoutDbrx {
		if ts, err = dbrxToMoec(ts, res.Model); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "the weights in %s do not fit its config.json", hfDir)
		}
	}
	if layout == LayoutLlama4 {
		if ts, err = llama4ToMoec(ts, res.Model); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "the weights in %s do not fit its config.json", hfDir)
		}
	}
	ts, err = arrange(ts, res.Model)
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "the weights in %s do not fit its config.json", hfDir)
	}
	var n int64
	for _, t := range ts {
		n += int64(len(t.Data))
	}
	// The checkpoint holds the parameters and the aux-loss-free routing biases (buffers).
	if want := res.Counts.TotalAll + res.Counts.Buffers; n != want {
		return nil, fmt.Errorf("hf: internal error: the weights hold %d numbers, moec counts %d parameters and %d buffer entries", n, res.Counts.TotalAll, res.Counts.Buffers)
	}
	hash, err := checkpoint.ConfigHash(res.Model)
	if err != nil {
		return nil, err
	}
	name := res.Model.Name
	c := &checkpoint.Checkpoint{
		Manifest: checkpoint.Manifest{
			Train: name, Stage: "import", Final: true, Model: res.Model, ConfigHash: hash,
			Optimizer:     checkpoint.OptimizerState{Kind: "none"},
			SpecialTokens: specialTokensOf(cfg),
		},
		Model: ts,
	}
	if err := emptyDir(out, diag.CodeWeightsMismatch); err != nil {
		return nil, err
	}
	srcFile := filepath.Join(out, name+".moe")
	if err := os.WriteFile(srcFile, res.Source, 0o644); err != nil {
		return nil, diag.RuntimeWrap(diag.CodeWeightsMismatch, err, "writing %s", srcFile)
	}
	dir, err := checkpoint.Writer{}.Save(filepath.Join(out, train.CheckpointsDir), c)
	if err != nil {
		return nil, err
	}
	return &CheckpointResult{Result: res, Checkpoint: dir, SourceFile: srcFile, Tensors: len(ts)}, nil
}
