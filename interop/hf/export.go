package hf

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// Files an export writes.
const (
	ConfigFile         = "config.json"          // transformers' config (transformers layouts)
	MoecConfigFile     = "moec_config.json"     // the model config (moec layout)
	WeightsFile        = "model.safetensors"    // every tensor, unless sharded (WeightsIndexFile)
	ExportManifestFile = "export_manifest.json" // what went where, with hashes
	ManifestFormat     = "moec.hf-export/v1"
)

// ExportManifest records an export so that a reader can check it without trusting moec.
type ExportManifest struct {
	Format      string         `json:"format"`
	Layout      Layout         `json:"layout"`
	Class       string         `json:"class,omitempty"`       // the transformers class; "" for the moec layout
	DType       string         `json:"dtype,omitempty"`       // the stored precision (ExportOptions.DType); "" is fp32
	Unsupported []string       `json:"unsupported,omitempty"` // why no transformers class holds the model
	Notes       []string       `json:"notes,omitempty"`       // where the class computes differently from moec's training
	Source      ExportSource   `json:"source"`
	Tensors     []TensorEntry  `json:"tensors"`
	Experts     []ExpertEntry  `json:"experts"`
	Files       []FileEntry    `json:"files"`
	Model       *program.Model `json:"model"`
}

// ExportSource names the checkpoint an export came from.
type ExportSource struct {
	Train      string `json:"train"`
	Stage      string `json:"stage"`
	Step       int64  `json:"step"`
	ConfigHash string `json:"config_hash"`
}

// TensorEntry is one exported tensor: its name in the export, its name in the checkpoint,
// its shape and the SHA-256 of its little-endian float32 data (of a bf16 or fp16 export,
// the float32 values its stored halves widen to).
type TensorEntry struct {
	Name   string `json:"name"`
	From   string `json:"from"`
	Shape  []int  `json:"shape"`
	SHA256 string `json:"sha256"`
}

// ExpertEntry lists the exported tensors of one routed expert of one MoE layer.
type ExpertEntry struct {
	Layer   int      `json:"layer"`
	Expert  int      `json:"expert"`
	Tensors []string `json:"tensors"`
}

// FileEntry is one written file.
type FileEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Export writes the checkpoint ckpt (a checkpoint directory or a run directory, whose
// newest checkpoint is taken) to the empty or absent directory out. It returns the
// manifest it wrote; Manifest.Unsupported says why a model went out in the moec layout.
// The weights are float32, sharded past DefaultMaxShardBytes (ExportWith chooses).
func Export(ckpt, out string) (*ExportManifest, error) {
	return ExportWith(ckpt, out, ExportOptions{})
}

// ExportWith is Export storing the weights as opt says.
func ExportWith(ckpt, out string, opt ExportOptions) (*ExportManifest, error) {
	opt, err := opt.normalized()
	if err != nil {
		return nil, err
	}
	dir, err := train.ResolveCheckpoint(ckpt)
	if err != nil {
		return nil, err
	}
	c, err := checkpoint.Load(dir, false)
	if err != nil {
		return nil, err
	}
	// The check run, eval and generate make. A model the CPU runtime has no layout for
	// (E0603, after finiteness passed) goes out in moec's layout as written, or through
	// arrange's own check of a transformers layout.
	if err := train.CheckWeights(dir, c.Manifest.Model, c.Model); err != nil && diag.CodeOf(err) != diag.CodeUnsupportedFeature {
		return nil, err
	}
	m := c.Manifest.Model
	layout, gaps := layoutFor(m)
	man := &ExportManifest{
		Format: ManifestFormat, Layout: layout, Class: classOf[layout], Unsupported: gaps, Model: m, DType: opt.DType,
		Source: ExportSource{Train: c.Manifest.Train, Stage: c.Manifest.Stage, Step: c.Manifest.Step, ConfigHash: c.Manifest.ConfigHash},
	}
	if layout != LayoutMoec {
		man.Notes = exportNotes(m)
	}
	if layout == LayoutDeepSeek {
		man.Notes = append(man.Notes, deepseekNotes(m)...)
		if deepseekV2Routing(m.MoE) {
			man.Class = deepseekV2Class
		}
	}
	if layout == LayoutDeepSeekMoE {
		man.Notes = append(man.Notes, deepseekMoENotes(m)...)
	}
	if layout == LayoutHunyuanMoE || layout == LayoutHunyuan {
		man.Notes = append(man.Notes, hunyuanNotes(m, layout)...)
	}
	if layout == LayoutPhimoe {
		man.Notes = append(man.Notes, phimoeNotes(m)...)
	}
	tensors := c.Model
	if layout != LayoutMoec {
		if tensors, err = arrange(c.Model, m); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s does not hold the tensors of its model", dir)
		}
	}
	outTensors := make([]safetensors.Tensor, len(tensors))
	from := make([]string, len(tensors))
	for i, t := range tensors {
		outTensors[i] = safetensors.Tensor{Name: fromMoec(layout, m, t.Name), Shape: t.Shape, Data: t.Data}
		from[i] = t.Name
	}
	switch layout {
	case LayoutGptOss:
		if outTensors, from, err = gptOssFromMoec(tensors); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s does not hold the tensors of its model", dir)
		}
	case LayoutDeepSeek, LayoutDeepSeekMoE:
		if outTensors, from, err = deepseekFromMoec(tensors, m, layout == LayoutDeepSeek); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s does not hold the tensors of its model", dir)
		}
	case LayoutDbrx:
		if outTensors, from, err = dbrxFromMoec(tensors, m); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s does not hold the tensors of its model", dir)
		}
	case LayoutLlama4:
		if outTensors, from, err = llama4FromMoec(tensors, m); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s does not hold the tensors of its model", dir)
		}
	}
	stored := make([]safetensors.RawTensor, len(outTensors))
	for i, t := range outTensors {
		raw, back, err := storedTensor(t, opt.DType)
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "checkpoint %s as %s", dir, opt.DType)
		}
		stored[i] = raw
		man.Tensors = append(man.Tensors, TensorEntry{Name: t.Name, From: from[i], Shape: t.Shape, SHA256: tensorHash(back)})
	}
	man.Experts = expertSets(man.Tensors)
	if err := emptyDir(out, diag.CodeNotExportable); err != nil {
		return nil, err
	}
	write := func(name string, b []byte) error {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return diag.RuntimeWrap(diag.CodeNotExportable, err, "writing %s", name)
		}
		sum := sha256.Sum256(b)
		man.Files = append(man.Files, FileEntry{Name: name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
		return nil
	}
	names, groups := shardFiles(stored, opt.MaxShardBytes)
	for i, g := range groups {
		weights, err := safetensors.EncodeRaw(g, map[string]string{"format": "pt"})
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "encoding %s", names[i])
		}
		if err := write(names[i], weights); err != nil {
			return nil, err
		}
	}
	if len(groups) > 1 {
		idx, err := encodeIndex(names, groups)
		if err != nil {
			return nil, err
		}
		if err := write(WeightsIndexFile, idx); err != nil {
			return nil, err
		}
	}
	var cfg any = m
	cfgName := MoecConfigFile
	if layout != LayoutMoec {
		hc := hfConfig(m, layout)
		hc["torch_dtype"] = exportDTypes[opt.DType].torch
		cfg, cfgName = hc, ConfigFile
	}
	if err := exportTokenizer(dir, m, c.Manifest.SpecialTokens, cfg, write); err != nil {
		return nil, err
	}
	cb, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("hf: encoding %s: %w", cfgName, err)
	}
	if err := write(cfgName, append(cb, '\n')); err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("hf: encoding %s: %w", ExportManifestFile, err)
	}
	if err := os.WriteFile(filepath.Join(out, ExportManifestFile), append(mb, '\n'), 0o644); err != nil {
		return nil, diag.RuntimeWrap(diag.CodeNotExportable, err, "writing %s", ExportManifestFile)
	}
	return man, nil
}

// arrange checks that ts are exactly the tensors of m (moec's names) and returns them in the
// order transformers' state dict has them.
func arrange(ts []safetensors.Tensor, m *program.Model) ([]safetensors.Tensor, error) {
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		if _, dup := byName[t.Name]; dup {
			return nil, fmt.Errorf("tensor %s appears twice", t.Name)
		}
		byName[t.Name] = t
	}
	want, err := expected(m)
	if err != nil {
		return nil, err
	}
	out := make([]safetensors.Tensor, 0, len(want))
	for _, w := range want {
		t, ok := byName[w.name]
		if !ok {
			return nil, fmt.Errorf("tensor %s is missing", w.name)
		}
		if !slices.Equal(t.Shape, w.dims) {
			return nil, fmt.Errorf("tensor %s has shape %v, the model needs %v", w.name, t.Shape, w.dims)
		}
		out = append(out, t)
		delete(byName, w.name)
	}
	if len(byName) > 0 {
		extra := make([]string, 0, len(byName))
		for n := range byName {
			extra = append(extra, n)
		}
		sort.Strings(extra)
		return nil, fmt.Errorf("%d tensor(s) the model does not have, first %s", len(extra), extra[0])
	}
	return out, nil
}

// expertSets groups the routed experts' tensors by (layer, expert).
func expertSets(ts []TensorEntry) []ExpertEntry {
	idx := map[[2]int]int{}
	var out []ExpertEntry
	for _, t := range ts {
		m := expertOf.FindStringSubmatch(t.Name)
		if m == nil {
			continue
		}
		l, _ := strconv.Atoi(m[1])
		e, _ := strconv.Atoi(m[2])
		k := [2]int{l, e}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, ExpertEntry{Layer: l, Expert: e})
		}
		out[i].Tensors = append(out[i].Tensors, t.Name)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Layer != out[j].Layer {
			return out[i].Layer < out[j].Layer
		}
		return out[i].Expert < out[j].Expert
	})
	return out
}

func tensorHash(data []float32) string {
	h := sha256.New()
	buf := make([]byte, 4*1024)
	for len(data) > 0 {
		n := min(len(data), len(buf)/4)
		for i, v := range data[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*n])
		data = data[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}

// emptyDir makes dir, or accepts it when it exists and is empty: an export never
// overwrites files.
func emptyDir(dir string, code diag.Code) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return diag.RuntimeWrap(code, err, "creating %s", dir)
		}
		return nil
	case err != nil:
		return diag.RuntimeWrap(code, err, "output %s", dir)
	case len(ents) > 0:
		return &diag.Diagnostic{Code: code, Summary: fmt.Sprintf("output directory %s is not empty", dir), Suggestion: "name a new directory"}
	}
	return nil
}

// hfConfig is the config.json transformers reads for m in layout l.
func hfConfig(m *program.Model, l Layout) map[string]any {
	if l == LayoutDbrx {
		return dbrxConfig(m) // DbrxConfig's own field names
	}
	a := m.Attention
	act := "silu"
	if m.FFN.Activation == program.GeGLU {
		act = "gelu"
	}
	cfg := map[string]any{
		"architectures":           []string{classOf[l]},
		"model_type":              string(l),
		"vocab_size":              m.PaddedVocab(),
		"hidden_size":             m.DModel,
		"intermediate_size":       m.FFN.Hidden,
		"num_hidden_layers":       m.Layers,
		"num_attention_heads":     a.Heads,
		"num_key_value_heads":     a.KVHeads,
		"head_dim":                a.HeadDim,
		"hidden_act":              act,
		"max_position_embeddings": m.SeqLen,
		"rms_norm_eps":            floatField(m.NormEps),
		"rope_theta":              floatField(m.RopeBase),
		"rope_scaling":            ropeScalingConfig(m),
		"tie_word_embeddings":     m.TieEmbeddings,
		"attention_dropout":       floatField(0),
		"torch_dtype":             "float32",
		"use_cache":               true,
	}
	switch l {
	case LayoutLlama:
		cfg["attention_bias"] = a.BiasQKV
		cfg["mlp_bias"] = m.FFN.Bias
	case LayoutQwen3:
		cfg["attention_bias"] = a.BiasQKV
		cfg["use_sliding_window"] = false
		cfg["sliding_window"] = nil
	case LayoutMixtral:
		e := m.MoE
		cfg["intermediate_size"] = e.ExpertHidden
		cfg["num_local_experts"] = e.Experts
		cfg["num_experts_per_tok"] = e.TopK
		cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
		cfg["router_jitter_noise"] = floatField(0)
		cfg["sliding_window"] = nil
		if a.Window > 0 {
			cfg["sliding_window"] = a.Window
		}
	case LayoutQwen3MoE:
		cfg["attention_bias"] = a.BiasQKV
		qwenMoEConfig(cfg, m)
	case LayoutOlmoe:
		// OlmoeConfig: every layer is sparse, intermediate_size is each expert's width and
		// q_norm/k_norm span hidden_size and kv_heads·head_dim (no field says so).
		e := m.MoE
		cfg["intermediate_size"] = e.ExpertHidden
		cfg["attention_bias"] = false
		cfg["clip_qkv"] = nil
		if a.ClipQKV > 0 {
			cfg["clip_qkv"] = floatField(a.ClipQKV)
		}
		cfg["num_experts"] = e.Experts
		cfg["num_experts_per_tok"] = e.TopK
		cfg["norm_topk_prob"] = e.Normalize
		cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
		cfg["router_z_loss_coef"] = floatField(e.ZLoss)
	case LayoutArctic:
		arcticConfig(cfg, m)
	case LayoutLlama4:
		llama4Config(cfg, m)
	case LayoutGptOss:
		gptOssConfig(cfg, m)
	case LayoutDeepSeek:
		deepseekConfig(cfg, m)
	case LayoutDeepSeekMoE:
		deepseekMoEConfig(cfg, m)
	case LayoutHunyuanMoE, LayoutHunyuan:
		hunyuanConfig(cfg, m, l)
	case LayoutPhimoe:
		phimoeConfig(cfg, m)
	case LayoutQwen2MoE:
		// Qwen2MoeConfig has no attention_bias: its Q/K/V always carry biases, its output
		// projection never does. intermediate_size is the dense layers' width.
		e := m.MoE
		sh := e.SharedHidden
		if sh == 0 {
			sh = e.ExpertHidden
		}
		qwenMoEConfig(cfg, m)
		cfg["shared_expert_intermediate_size"] = sh
	}
	return cfg
}

// qwenMoEConfig sets the MoE fields Qwen2MoeConfig and Qwen3MoeConfig share: experts
// under mlp. every decoder_sparse_step layers, an optional top-k renormalisation.
func qwenMoEConfig(cfg map[string]any, m *program.Model) {
	e := m.MoE
	cfg["num_experts"] = e.Experts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["moe_intermediate_size"] = e.ExpertHidden
	cfg["decoder_sparse_step"] = max(e.Every, 1)
	cfg["mlp_only_layers"] = []int{}
	if len(e.Layers) > 0 || e.FirstDense > 0 {
		// MoE layers by a list or after dense ones: every layer sparse but those listed.
		dense := []int{}
		for i := range m.Layers {
			if !m.IsMoELayer(i) {
				dense = append(dense, i)
			}
		}
		cfg["decoder_sparse_step"], cfg["mlp_only_layers"] = 1, dense
	}
	cfg["norm_topk_prob"] = e.Normalize
	cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
	cfg["use_sliding_window"] = false
	cfg["sliding_window"] = nil
}

// exportNotes says where the transformers class computes differently from how moec
// trained m, although it holds the same weights.
func exportNotes(m *program.Model) []string {
	var notes []string
	if e := m.MoE; e != nil && e.Experts > 0 && !e.Dropless() {
		notes = append(notes, fmt.Sprintf("moec trained with capacity_factor %v (assignments over an expert's capacity dropped); transformers drops no token", e.CapacityFactor))
	}
	if m.PaddedVocab() != m.Vocab {
		notes = append(notes, fmt.Sprintf("vocab_size is the padded %d rows (vocab %d padded to a multiple of %d)", m.PaddedVocab(), m.Vocab, m.VocabPadTo))
	}
	return notes
}

// floatField is a config value transformers declares a float: written with a decimal
// point even when whole (0.0, 500000.0), because transformers 5's strict configs refuse
// an int where a float field is declared (router_jitter_noise = 0 fails to load).
type floatField float64

// MarshalJSON writes f as JSON with a fraction or an exponent.
func (f floatField) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") { // nN: NaN and Inf, which json refuses below
		s += ".0"
	}
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return nil, fmt.Errorf("hf: config value %v is not a JSON number", float64(f))
	}
	return []byte(s), nil
}
