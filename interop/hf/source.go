package hf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/format"
	"github.com/moec-dev/moec/lang/parse"
)

// Options steer an import.
type Options struct {
	Name string   // the model's name in the .moe file ("" = derived from model_type)
	Drop []string // config fields the user accepts losing (each is noted in the header)
	// Source names the config in messages ("" = "config.json").
	Source string
}

// Result is an imported config.
type Result struct {
	Source    []byte         // canonical .moe text; it passes moec check
	Model     *program.Model // the checked model
	ModelType string         // config.json's model_type
	Class     string         // the transformers class that loads such a checkpoint
	Counts    analysis.Counts
	// ParamDelta is how many parameters the checkpoint has beyond Counts.TotalAll: 0 unless
	// a dropped field removed some (Options.Drop).
	ParamDelta int64
	Notes      []string // what the header says about dropped fields and approximations
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ImportConfig turns a Hugging Face config.json into a .moe model. Fields moec cannot
// express make it return an *Error listing all of them.
func ImportConfig(configJSON []byte, opt Options) (*Result, error) {
	r, err := newReader(configJSON, opt.Drop, opt.Source)
	if err != nil {
		return nil, err
	}
	s, err := readSpec(r)
	if err != nil {
		return nil, err
	}
	name := opt.Name
	if name == "" {
		name = s.modelType
	}
	if !identRE.MatchString(name) {
		return nil, diag.Runtimef(diag.CodeBadHFConfig, "model name %q is not an identifier (letters, digits and _)", name)
	}
	src := s.source(name, r.notes)
	file := name + ".moe"
	formatted, ds := format.File(file, src)
	if ds.HasErrors() {
		return nil, fmt.Errorf("hf: internal error: generated source does not parse: %v\n%s", ds.Err(), src)
	}
	f, ds := parse.File(file, formatted)
	if ds.HasErrors() {
		return nil, fmt.Errorf("hf: internal error: formatted source does not parse: %v", ds.Err())
	}
	prog, ds := check.Check(f)
	if ds.HasErrors() {
		// The config's values break a rule of moec's (heads not dividing d_model, say):
		// that is the user's input, so it is reported as such, with moec's own words.
		return nil, diag.RuntimeWrap(diag.CodeBadHFConfig, ds.Err(), "the imported model does not pass moec check")
	}
	m := prog.Models[name]
	if m == nil {
		return nil, fmt.Errorf("hf: internal error: model %s missing after check", name)
	}
	return &Result{
		Source: formatted, Model: m, ModelType: s.modelType, Class: s.class,
		Counts: analysis.Count(m), ParamDelta: r.delta, Notes: r.notes,
	}, nil
}

// source writes the spec as .moe text; lang/format makes it canonical afterwards.
func (s *spec) source(name string, notes []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "// Imported from a Hugging Face config.json: %s (model_type %s).\n", s.class, s.modelType)
	if s.moe == nil || len(s.moe.moeLayers) == 0 {
		b.WriteString("// A dense model: one expert per layer. A train stage may grow it (grow = copy).\n")
	}
	for _, n := range notes {
		for _, line := range wrap(n, 96) {
			fmt.Fprintf(&b, "// %s\n", line)
		}
	}
	fmt.Fprintf(&b, "model %s {\n", name)
	kv := func(indent, k string, v any) { fmt.Fprintf(&b, "%s%s = %s\n", indent, k, value(v)) }
	kv("", "vocab", s.vocab)
	kv("", "d_model", s.dModel)
	kv("", "layers", s.layers)
	kv("", "seq_len", s.seqLen)
	if s.layerNorm {
		b.WriteString("norm = layernorm\n")
	} else {
		b.WriteString("norm = rmsnorm\n")
	}
	kv("", "norm_eps", s.normEps)
	b.WriteString("position = rotary\n")
	kv("", "rope_base", s.ropeBase)
	if rp := s.ropeScale; rp != nil {
		fmt.Fprintf(&b, "rope_scaling = %s\n", rp.kind)
		if rp.kind != program.RopeLongrope {
			kv("", "rope_factor", rp.factor)
		}
		if rp.original > 0 && (rp.kind == program.RopeYarn || rp.kind == program.RopeLlama3 || rp.kind == program.RopeLongrope) {
			kv("", "rope_original_seq_len", rp.original)
		}
		for _, f := range []struct {
			key string
			v   float64
		}{{"rope_beta_fast", rp.betaFast}, {"rope_beta_slow", rp.betaSlow}, {"rope_mscale", rp.mscale},
			{"rope_mscale_all_dim", rp.mscaleAllDim}, {"rope_attention_factor", rp.attentionFactor},
			{"rope_low_freq_factor", rp.lowFreq}, {"rope_high_freq_factor", rp.highFreq}} {
			if f.v != 0 {
				kv("", f.key, f.v)
			}
		}
		if rp.noTruncate {
			kv("", "rope_truncate", false)
		}
		for _, l := range []struct {
			key string
			v   []float64
		}{{"rope_short_factor", rp.short}, {"rope_long_factor", rp.long}} {
			if len(l.v) > 0 {
				parts := make([]string, len(l.v))
				for i, f := range l.v {
					parts[i] = value(f)
				}
				fmt.Fprintf(&b, "%s = [%s]\n", l.key, strings.Join(parts, ", "))
			}
		}
	}
	kv("", "tie_embeddings", s.tie)
	if s.layerNorm && s.normNoBias {
		kv("", "norm_bias", false)
	}
	if s.headBias {
		kv("", "head_bias", true)
	}
	if s.mtp > 0 {
		kv("", "mtp_depth", s.mtp)
	}
	b.WriteString("attention {\n")
	kv("", "heads", s.heads)
	if s.kvHeads != s.heads {
		kv("", "kv_heads", s.kvHeads)
	}
	if s.kvLora > 0 {
		if s.qLora > 0 {
			kv("", "q_lora_rank", s.qLora)
		}
		kv("", "kv_lora_rank", s.kvLora)
		kv("", "qk_nope_head_dim", s.nope)
		kv("", "qk_rope_head_dim", s.rope)
		kv("", "v_head_dim", s.vDim)
	} else if s.headDim > 0 && s.headDim*int64(s.heads) != s.dModel {
		kv("", "head_dim", s.headDim)
	}
	switch {
	case s.qkNormFull:
		b.WriteString("qk_norm = full\n")
	case s.qkNorm:
		kv("", "qk_norm", true)
	}
	if s.clipQKV > 0 {
		kv("", "clip_qkv", s.clipQKV)
	}
	if s.qkNormAfterRope {
		kv("", "qk_norm_after_rope", true)
	}
	if s.shareKV > 1 {
		kv("", "share_kv", s.shareKV)
	}
	if s.qkvBias {
		kv("", "qkv_bias", true)
	}
	if s.outBias {
		kv("", "out_bias", true)
	}
	if s.window > 0 {
		kv("", "window", s.window)
	}
	if s.fullEvery > 0 {
		kv("", "full_every", s.fullEvery)
	}
	if s.sinks {
		kv("", "sinks", true)
	}
	if l4 := s.llama4Attn; l4 != nil {
		if l4.nopeEvery > 0 {
			kv("", "nope_every", l4.nopeEvery)
		}
		if l4.chunk > 0 {
			kv("", "chunk", l4.chunk)
		}
		if l4.qkL2 {
			kv("", "qk_l2_norm", true)
		}
		if l4.temperature > 0 {
			kv("", "nope_temperature", l4.temperature)
			kv("", "nope_temperature_floor", l4.temperatureFor)
		}
	}
	b.WriteString("}\nffn {\n")
	kv("", "hidden", s.ffnHidden)
	fmt.Fprintf(&b, "activation = %s\n", s.activation)
	if s.ffnBias {
		kv("", "bias", true)
	}
	b.WriteString("}\n")
	if m := s.moe; m != nil && len(m.moeLayers) > 0 {
		b.WriteString("moe {\n")
		kv("", "experts", m.experts)
		kv("", "top_k", m.topK)
		if m.expertHidden > 0 && m.expertHidden != s.ffnHidden {
			kv("", "expert_hidden", m.expertHidden)
		}
		if m.shared > 0 {
			kv("", "shared_experts", m.shared)
			if m.sharedHidden > 0 && m.sharedHidden != m.expertHidden {
				kv("", "shared_hidden", m.sharedHidden)
			}
			if m.sharedGate {
				kv("", "shared_gate", true)
			}
		}
		every, first, ok := ruleFor(m.moeLayers, s.layers)
		switch {
		case !ok:
			parts := make([]string, len(m.moeLayers))
			for i, l := range m.moeLayers {
				parts[i] = strconv.Itoa(l)
			}
			fmt.Fprintf(&b, "layers = [%s]\n", strings.Join(parts, ", "))
		default:
			if every > 1 {
				kv("", "every", every)
			}
			if first > 0 {
				kv("", "first_dense", first)
			}
		}
		fmt.Fprintf(&b, "score = %s\n", m.score)
		kv("", "normalize", m.normalize)
		b.WriteString("capacity_factor = dropless // Hugging Face MoE layers drop no token\n")
		kv("", "balance_loss", m.balance)
		if m.z > 0 {
			kv("", "z_loss", m.z)
		}
		if m.auxFree > 0 {
			kv("", "aux_free_bias", m.auxFree)
		}
		if m.groups > 0 {
			kv("", "groups", m.groups)
			kv("", "topk_groups", m.topkG)
		}
		if m.routerBias {
			kv("", "router_bias", true)
		}
		if m.expertBias {
			kv("", "expert_bias", true)
		}
		if m.swigluLimit > 0 {
			kv("", "swiglu_limit", m.swigluLimit)
			if m.swigluAlpha != 0 && m.swigluAlpha != 1.702 {
				kv("", "swiglu_alpha", m.swigluAlpha)
			}
		}
		if m.gateInput {
			kv("", "gate_input", true)
		}
		if m.parallelAttention {
			kv("", "parallel_dense", true)
			kv("", "parallel_attention", true)
		}
		if m.sparsemixer > 0 {
			kv("", "sparsemixer_eps", m.sparsemixer)
		}
		if m.routedScale != 0 && m.routedScale != 1 {
			kv("", "routed_scale", m.routedScale)
		}
		b.WriteString("}\n")
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// ruleFor finds every and first_dense that make exactly layers (sorted) MoE by moec's rule:
// the gap between the first two MoE layers is every, and first_dense puts the first one
// last in its group. Anything else is written as an explicit list.
func ruleFor(layers []int, n int) (every, first int, ok bool) {
	if len(layers) == 0 {
		return 0, 0, false
	}
	every = 1
	if len(layers) > 1 {
		every = layers[1] - layers[0]
	}
	first = layers[0] - (every - 1)
	if every < 1 || first < 0 {
		return 0, 0, false
	}
	in := make(map[int]bool, len(layers))
	for _, l := range layers {
		in[l] = true
	}
	m := &program.MoE{Experts: 2, Every: every, FirstDense: first}
	for i := 0; i < n; i++ {
		if m.IsMoELayer(i) != in[i] {
			return 0, 0, false
		}
	}
	return every, first, true
}

// value writes a Go value as .moe text: floats in their shortest exact form.
func value(v any) string {
	switch x := v.(type) {
	case float64:
		s := strconv.FormatFloat(x, 'g', -1, 64)
		s = strings.Replace(s, "e+0", "e", 1)
		s = strings.Replace(s, "e+", "e", 1)
		s = strings.Replace(s, "e-0", "e-", 1)
		if !strings.ContainsAny(s, ".e") {
			s += ".0"
		}
		return s
	default:
		return fmt.Sprint(x)
	}
}

// wrap breaks text into lines of at most width bytes at spaces (a longer word stays whole);
// continuation lines are indented so a note reads as one item.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) > width:
			lines = append(lines, line)
			line = "  " + w
		default:
			line += " " + w
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
