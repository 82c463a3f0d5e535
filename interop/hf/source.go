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
	w := &moeWriter{}
	fmt.Fprintf(&w.b, "// Imported from a Hugging Face config.json: %s (model_type %s).\n", s.class, s.modelType)
	if s.moe == nil || len(s.moe.moeLayers) == 0 {
		w.b.WriteString("// A dense model: one expert per layer. A train stage may grow it (grow = copy).\n")
	}
	for _, n := range notes {
		for _, line := range wrap(n, 96) {
			fmt.Fprintf(&w.b, "// %s\n", line)
		}
	}
	fmt.Fprintf(&w.b, "model %s {\n", name)
	s.writeModel(w)
	s.writeRopeScaling(w)
	w.kv("tie_embeddings", s.tie)
	w.flag(s.layerNorm && s.normNoBias, "norm_bias", false)
	w.flag(s.headBias, "head_bias", true)
	nonzero(w, "mtp_depth", s.mtp)
	w.b.WriteString("attention {\n")
	s.writeAttention(w)
	w.b.WriteString("}\nffn {\n")
	w.kv("hidden", s.ffnHidden)
	w.word("activation", s.activation)
	w.flag(s.ffnBias, "bias", true)
	w.b.WriteString("}\n")
	if m := s.moe; m != nil && len(m.moeLayers) > 0 {
		w.b.WriteString("moe {\n")
		s.writeMoE(w, m)
		w.b.WriteString("}\n")
	}
	w.b.WriteString("}\n")
	return []byte(w.b.String())
}

// moeWriter writes a .moe block's keys, one per line.
type moeWriter struct{ b strings.Builder }

// kv writes k = v.
func (w *moeWriter) kv(k string, v any) { fmt.Fprintf(&w.b, "%s = %s\n", k, value(v)) }

// word writes k = v with v a bare word (an enum's value).
func (w *moeWriter) word(k string, v any) { fmt.Fprintf(&w.b, "%s = %s\n", k, v) }

// flag writes k = v when cond holds.
func (w *moeWriter) flag(cond bool, k string, v any) {
	if cond {
		w.kv(k, v)
	}
}

// nonzero writes k = v unless v is zero.
func nonzero[T int | int64 | float64](w *moeWriter, k string, v T) {
	w.flag(v != 0, k, v)
}

// writeModel writes the model's sizes, norm and positions.
func (s *spec) writeModel(w *moeWriter) {
	w.kv("vocab", s.vocab)
	w.kv("d_model", s.dModel)
	w.kv("layers", s.layers)
	w.kv("seq_len", s.seqLen)
	if s.layerNorm {
		w.word("norm", "layernorm")
	} else {
		w.word("norm", "rmsnorm")
	}
	w.kv("norm_eps", s.normEps)
	w.word("position", "rotary")
	w.kv("rope_base", s.ropeBase)
}

// writeRopeScaling writes the rotary scaling's keys, where the config scales.
func (s *spec) writeRopeScaling(w *moeWriter) {
	rp := s.ropeScale
	if rp == nil {
		return
	}
	w.word("rope_scaling", rp.kind)
	w.flag(rp.kind != program.RopeLongrope, "rope_factor", rp.factor)
	w.flag(rp.original > 0 && (rp.kind == program.RopeYarn || rp.kind == program.RopeLlama3 || rp.kind == program.RopeLongrope), "rope_original_seq_len", rp.original)
	for _, f := range []struct {
		key string
		v   float64
	}{{"rope_beta_fast", rp.betaFast}, {"rope_beta_slow", rp.betaSlow}, {"rope_mscale", rp.mscale},
		{"rope_mscale_all_dim", rp.mscaleAllDim}, {"rope_attention_factor", rp.attentionFactor},
		{"rope_low_freq_factor", rp.lowFreq}, {"rope_high_freq_factor", rp.highFreq}} {
		nonzero(w, f.key, f.v)
	}
	w.flag(rp.noTruncate, "rope_truncate", false)
	for _, l := range []struct {
		key string
		v   []float64
	}{{"rope_short_factor", rp.short}, {"rope_long_factor", rp.long}} {
		if len(l.v) > 0 {
			parts := make([]string, len(l.v))
			for i, f := range l.v {
				parts[i] = value(f)
			}
			fmt.Fprintf(&w.b, "%s = [%s]\n", l.key, strings.Join(parts, ", "))
		}
	}
}

// writeAttention writes the attention block's keys.
func (s *spec) writeAttention(w *moeWriter) {
	w.kv("heads", s.heads)
	w.flag(s.kvHeads != s.heads, "kv_heads", s.kvHeads)
	if s.kvLora > 0 {
		nonzero(w, "q_lora_rank", s.qLora)
		w.kv("kv_lora_rank", s.kvLora)
		w.kv("qk_nope_head_dim", s.nope)
		w.kv("qk_rope_head_dim", s.rope)
		w.kv("v_head_dim", s.vDim)
	} else {
		w.flag(s.headDim > 0 && s.headDim*int64(s.heads) != s.dModel, "head_dim", s.headDim)
	}
	switch {
	case s.qkNormFull:
		w.word("qk_norm", "full")
	case s.qkNorm:
		w.kv("qk_norm", true)
	}
	nonzero(w, "clip_qkv", s.clipQKV)
	w.flag(s.qkNormAfterRope, "qk_norm_after_rope", true)
	w.flag(s.shareKV > 1, "share_kv", s.shareKV)
	w.flag(s.qkvBias, "qkv_bias", true)
	w.flag(s.outBias, "out_bias", true)
	nonzero(w, "window", s.window)
	nonzero(w, "full_every", s.fullEvery)
	w.flag(s.sinks, "sinks", true)
	if l4 := s.llama4Attn; l4 != nil {
		nonzero(w, "nope_every", l4.nopeEvery)
		nonzero(w, "chunk", l4.chunk)
		w.flag(l4.qkL2, "qk_l2_norm", true)
		if l4.temperature > 0 {
			w.kv("nope_temperature", l4.temperature)
			w.kv("nope_temperature_floor", l4.temperatureFor)
		}
	}
}

// writeMoE writes the moe block's keys.
func (s *spec) writeMoE(w *moeWriter, m *moeSpec) {
	w.kv("experts", m.experts)
	w.kv("top_k", m.topK)
	w.flag(m.expertHidden > 0 && m.expertHidden != s.ffnHidden, "expert_hidden", m.expertHidden)
	if m.shared > 0 {
		w.kv("shared_experts", m.shared)
		w.flag(m.sharedHidden > 0 && m.sharedHidden != m.expertHidden, "shared_hidden", m.sharedHidden)
		w.flag(m.sharedGate, "shared_gate", true)
	}
	if every, first, ok := ruleFor(m.moeLayers, s.layers); ok {
		w.flag(every > 1, "every", every)
		w.flag(first > 0, "first_dense", first)
	} else {
		parts := make([]string, len(m.moeLayers))
		for i, l := range m.moeLayers {
			parts[i] = strconv.Itoa(l)
		}
		fmt.Fprintf(&w.b, "layers = [%s]\n", strings.Join(parts, ", "))
	}
	w.word("score", m.score)
	w.kv("normalize", m.normalize)
	w.b.WriteString("capacity_factor = dropless // Hugging Face MoE layers drop no token\n")
	w.kv("balance_loss", m.balance)
	nonzero(w, "z_loss", m.z)
	nonzero(w, "aux_free_bias", m.auxFree)
	if m.groups > 0 {
		w.kv("groups", m.groups)
		w.kv("topk_groups", m.topkG)
	}
	w.flag(m.routerBias, "router_bias", true)
	w.flag(m.expertBias, "expert_bias", true)
	if m.swigluLimit > 0 {
		w.kv("swiglu_limit", m.swigluLimit)
		w.flag(m.swigluAlpha != 0 && m.swigluAlpha != 1.702, "swiglu_alpha", m.swigluAlpha)
	}
	w.flag(m.gateInput, "gate_input", true)
	if m.parallelAttention {
		w.kv("parallel_dense", true)
		w.kv("parallel_attention", true)
	}
	nonzero(w, "sparsemixer_eps", m.sparsemixer)
	w.flag(m.routedScale != 0 && m.routedScale != 1, "routed_scale", m.routedScale)
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
