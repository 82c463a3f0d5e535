package hf

import (
	"encoding/json"
	"fmt"
	"strings"
)

// llama4Spec is what Llama 4's attention adds to a spec (moec's attention.nope_every,
// chunk, qk_l2_norm and nope_temperature).
type llama4Spec struct {
	nopeEvery      int
	chunk          int64
	qkL2           bool
	temperature    float64
	temperatureFor int64 // floor_scale
}

// llama4 reads Llama 4's language model (model_type llama4_text, transformers'
// Llama4ForCausalLM): MoE in the layers moe_layers lists (by default every
// interleave_moe_layer_step-th, the last of each group), each with one shared expert of
// intermediate_size beside the routed experts of the same width and a sigmoid router whose
// score multiplies the chosen expert's input; the other layers a dense MLP of
// intermediate_size_mlp. Rotary positions in all layers but those no_rope_layers leaves
// without (every no_rope_layer_interval-th by default); the rotary layers attend within
// chunks of attention_chunk_size, normalise their rotated queries and keys without scales
// (use_qk_norm), and the others scale their queries by position (attn_temperature_tuning).
func (s *spec) llama4(r *reader) {
	s.ffnHidden = r.integer("intermediate_size_mlp", 16384)
	m := &moeSpec{
		experts: int(r.required("num_local_experts")), topK: int(r.integer("num_experts_per_tok", 1)),
		expertHidden: r.required("intermediate_size"), shared: 1,
		score: "sigmoid", balance: r.float("router_aux_loss_coef", 0.001), gateInput: true,
	}
	step := int(r.integer("interleave_moe_layer_step", 1))
	if step < 1 {
		r.bad("interleave_moe_layer_step", "must be at least 1")
		step = 1
	}
	if r.present("moe_layers") {
		for _, l := range r.ints("moe_layers") {
			if l < 0 || l >= int64(s.layers) {
				r.bad("moe_layers", "layer %d is not among the %d layers", l, s.layers)
				continue
			}
			m.moeLayers = append(m.moeLayers, int(l))
		}
	} else {
		m.allLayers(s.layers, step-1, step)
	}
	s.moe = m

	l4 := &llama4Spec{}
	s.llama4Attn = l4
	interval := int(r.integer("no_rope_layer_interval", 4))
	if raw := r.ints("no_rope_layers"); len(raw) > 0 {
		// One entry per layer, 1 where the layer rotates: moec's rule is a period.
		interval = ropePeriod(raw)
		if interval < 0 || len(raw) != s.layers {
			r.refuse("no_rope_layers", fmt.Sprintf("rotary positions in the layers %s", compactInts(raw)),
				"moec leaves rotary positions out of every Nth layer (attention.nope_every), the last of each group")
			interval = 0
		}
	}
	if interval > 0 && interval <= s.layers {
		l4.nopeEvery = interval
	}
	if c := r.integer("attention_chunk_size", 8192); c > 0 && c < s.seqLen {
		l4.chunk = c
	}
	l4.qkL2 = r.boolean("use_qk_norm", true)
	// attn_temperature_tuning is a flag; the released configs write it as the number 4.
	tuning := true
	if raw := r.take("attn_temperature_tuning"); raw != nil {
		var b bool
		var n float64
		switch {
		case json.Unmarshal(raw, &b) == nil:
			tuning = b
		case json.Unmarshal(raw, &n) == nil:
			tuning = n != 0
		default:
			r.bad("attn_temperature_tuning", "want true, false or a number, have %s", compact(raw))
		}
	}
	scale, floor := r.float("attn_scale", 0.1), r.integer("floor_scale", 8192)
	if tuning && l4.nopeEvery > 0 && scale != 0 {
		if scale < 0 || floor < 1 {
			r.bad("attn_scale", "the query temperature needs attn_scale > 0 and floor_scale >= 1, have %v and %d", scale, floor)
		}
		l4.temperature, l4.temperatureFor = scale, floor
	}
	s.llama4LayerTypes(r, l4)
	// Inference and tooling switches that leave the numbers alone.
	for _, k := range []string{"cache_implementation", "for_llm_compressor", "use_sliding_window", "sliding_window"} {
		r.used[k] = true
	}
}

// llama4LayerTypes checks layer_types, where a config has it, against the rule the other
// fields give: chunked_attention in the rotary layers (when chunking), full_attention in
// the others.
func (s *spec) llama4LayerTypes(r *reader, l4 *llama4Spec) {
	raw := r.take("layer_types")
	if raw == nil {
		return
	}
	var types []string
	if err := json.Unmarshal(raw, &types); err != nil {
		r.bad("layer_types", "want a list of strings, have %s", compact(raw))
		return
	}
	for i, t := range types {
		want := "full_attention"
		if l4.chunk > 0 && (l4.nopeEvery == 0 || (i+1)%l4.nopeEvery != 0) {
			want = "chunked_attention"
		}
		if t != want {
			r.refuse("layer_types", fmt.Sprintf("layer %d is %s", i, t),
				"moec's Llama 4 layers chunk their attention exactly where they rotate (attention.chunk with attention.nope_every)")
			return
		}
	}
}

// ropePeriod is the N for which flags (1: the layer rotates) is 1 exactly where
// (i+1) % N != 0, len(flags)+1 when every layer rotates, and -1 when there is none.
func ropePeriod(flags []int64) int {
	first := -1
	for i, f := range flags {
		if f == 0 {
			first = i
			break
		}
	}
	n := first + 1
	if first < 0 {
		n = len(flags) + 1
	}
	for i, f := range flags {
		if (f != 0) != ((i+1)%n != 0) {
			return -1
		}
	}
	return n
}

func compactInts(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	s := "[" + strings.Join(parts, ",") + "]"
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
