package check

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// flatten merges a model's entries with its base's, key by key and section by section.
// Inherited entries keep their expressions (re-evaluated in the child) and name the
// model that wrote them. The `extends` chain is walked up with a loop to the first model
// already merged (or one without a base, or whose base is unknown or closes a cycle) and
// merged back down, so a chain of any length costs one pass and no deep recursion.
func (c *checker) flatten(d *decl) *flatBlock {
	if d.flat != nil {
		return d.flat
	}
	var chain []*decl // d, its base, its base's base, ...: none merged yet
	onChain := map[*decl]int{}
	for cur := d; ; {
		onChain[cur] = len(chain)
		chain = append(chain, cur)
		ext := cur.block.Extends
		if ext == nil {
			break
		}
		base := c.lookupDecl("model", ext.Name, diag.CodeUnknownBase, cur.file, ext, "model "+cur.name+" extends")
		if base == nil {
			cur.flat = newFlatBlock()
			cur.flat.incomplete = true
			break
		}
		if i, seen := onChain[base]; seen {
			// The model that closes the cycle reports it, naming the models in the order
			// the chain was followed.
			var names []string
			for _, m := range chain[i:] {
				names = append(names, m.name)
			}
			names = append(names, base.name)
			dg := c.errorf(diag.CodeExtendsCycle, diag.RangeOf(cur.file, ext), "models extend each other in a cycle: %s", strings.Join(names, " extends "))
			dg.Suggestion = "remove one `extends`"
			cur.flat = newFlatBlock()
			cur.flat.incomplete = true
			break
		}
		if base.flat != nil {
			break
		}
		cur = base
	}
	for i := len(chain) - 1; i >= 0; i-- {
		m := chain[i]
		fb := m.flat // set above when the base is unknown or cyclic: nothing to inherit
		if fb == nil {
			fb = newFlatBlock()
			if ext := m.block.Extends; ext != nil {
				base := c.byKind["model"][ext.Name]
				inheritFlat(fb, base.flat, "model "+base.name)
			}
		}
		c.readBody(m.spec, "model "+m.name, m.block.Body, m.file, fb)
		fb.incomplete = fb.incomplete || m.block.Broken
		m.flat = fb
	}
	return d.flat
}

// inheritFlat copies a base model's merged entries into fb.
func inheritFlat(fb, base *flatBlock, from string) {
	fb.incomplete = base.incomplete
	inherit := func(dst, src map[string]*entry) {
		for k, e := range src {
			ie := *e
			if e.source == program.Written {
				ie.source, ie.from = program.Inherited, from
			}
			dst[k] = &ie
		}
	}
	inherit(fb.entries, base.entries)
	for name, s := range base.sections {
		// No position yet: diagnostics about the section point at the child's own
		// block if it writes one (readBody sets it), else at its name.
		fs := &flatSection{entries: map[string]*entry{}}
		fb.sections[name] = fs
		inherit(fs.entries, s.entries)
	}
}

// resolveModels evaluates every model and checks its cross-field rules.
func (c *checker) resolveModels() {
	for _, d := range c.declsOf("model") {
		fb := c.flatten(d)
		root := newScope("model "+d.name, d.spec, d.file, d.block.Name, fb.entries, nil)
		root.incomplete = fb.incomplete
		for _, sec := range d.spec.sections {
			fs := fb.sections[sec]
			if fs == nil && sec == "moe" {
				continue // no moe block anywhere in the chain: a dense model
			}
			var at ast.Node = d.block.Name
			file, entries := d.file, map[string]*entry(nil)
			if fs != nil {
				entries = fs.entries
				if fs.at != nil {
					at, file = fs.at, fs.file
				}
			}
			root.sections[sec] = newScope(root.path+"."+sec, c.schema.blocks[sec], file, at, entries, root)
		}
		d.scope = root
		before := c.errorCount()
		c.r.evalAll(root)
		m := buildModel(d, root)
		c.validateModel(root, m)
		if c.errorCount() == before && !fb.incomplete {
			d.counted = c.countModel(m, diag.RangeOf(d.file, d.block.Name), "model "+d.name)
		}
		c.prog.Models[d.name] = m
		c.prog.ModelOrder = append(c.prog.ModelOrder, d.name)
		d.prov = root.provenance(nil)
	}
}

// buildModel reads the resolved scope into a program.Model.
func buildModel(d *decl, s *scope) *program.Model {
	m := &program.Model{
		Name:          d.name,
		Vocab:         s.i64("vocab"),
		VocabPadTo:    s.i64("vocab_pad_to"),
		DModel:        s.i64("d_model"),
		Layers:        s.int("layers"),
		Encoder:       s.int("encoder_layers"),
		SeqLen:        s.i64("seq_len"),
		Norm:          program.Norm(s.str("norm")),
		NormEps:       s.f64("norm_eps"),
		NormPlacement: program.NormPlacement(s.str("norm_placement")),
		FinalNorm:     s.boolean("final_norm"),
		Position:      program.Position(s.str("position")),
		RopeBase:      s.f64("rope_base"),
		MaxPosition:   s.i64("max_position"),
		TieEmbeddings: s.boolean("tie_embeddings"),
		MTPDepth:      s.int("mtp_depth"),
	}
	m.RopeScaling = ropeScaling(s)
	if _, set := s.val("norm_bias"); set {
		m.NormNoBias = !s.boolean("norm_bias")
	}
	if _, set := s.val("head_bias"); set {
		m.HeadBias = s.boolean("head_bias")
	}
	if d.block.Extends != nil {
		m.Extends = d.block.Extends.Name
	}
	if a := s.sections["attention"]; a != nil {
		m.Attention = program.Attention{
			Heads: a.int("heads"), KVHeads: a.int("kv_heads"), HeadDim: a.i64("head_dim"),
			QLoraRank: a.i64("q_lora_rank"), KVLoraRank: a.i64("kv_lora_rank"),
			QKNopeHeadDim: a.i64("qk_nope_head_dim"), QKRopeHeadDim: a.i64("qk_rope_head_dim"), VHeadDim: a.i64("v_head_dim"),
			QKNorm: a.boolean("qk_norm"), TalkingHeads: a.boolean("talking_heads"),
			ShareWeights: a.f64("share_weights"), ShareKV: a.int("share_kv"), Sinks: a.boolean("sinks"),
			Window: a.i64("window"), BiasQKV: a.boolean("qkv_bias"), BiasOut: a.boolean("out_bias"),
		}
		m.Attention.MLA = m.Attention.KVLoraRank > 0
		m.Attention.QKNormFull = a.str("qk_norm") == "full"
		m.Attention.ClipQKV = orFloat(a, "clip_qkv", 0)
		if _, set := a.val("qk_norm_after_rope"); set {
			m.Attention.QKNormAfterRope = a.boolean("qk_norm_after_rope")
		}
		llama4Attention(a, &m.Attention)
	}
	if f := s.sections["ffn"]; f != nil {
		m.FFN = program.FFN{Hidden: f.i64("hidden"), Activation: program.Activation(f.str("activation")), Bias: f.boolean("bias")}
	}
	if e := s.sections["moe"]; e != nil {
		m.MoE = &program.MoE{
			Experts: e.int("experts"), TopK: e.int("top_k"), ExpertHidden: e.i64("expert_hidden"),
			Activation: program.Activation(e.str("activation")), ExpertBias: e.boolean("expert_bias"),
			SharedExperts: e.int("shared_experts"), SharedHidden: e.i64("shared_hidden"), SharedGate: e.boolean("shared_gate"),
			Every: e.int("every"), FirstDense: e.int("first_dense"), Layers: e.ints("layers"),
			ParallelDense: e.boolean("parallel_dense"), EncoderMoE: e.boolean("encoder"),
			Router: program.RouterInput(e.str("router")), RouterDim: e.i64("router_dim"),
			Score: program.Score(e.str("score")), Normalize: e.boolean("normalize"), RouterBias: e.boolean("router_bias"),
			CapacityFactor: e.f64("capacity_factor"), DroplessSkew: e.f64("dropless_skew"),
			BalanceLoss: e.f64("balance_loss"), ZLoss: e.f64("z_loss"), AuxFreeBias: e.f64("aux_free_bias"),
			Groups: e.int("groups"), TopKGroups: e.int("topk_groups"),
		}
		m.MoE.SparsemixerEps = orFloat(e, "sparsemixer_eps", 0)
		if f := orFloat(e, "swiglu_limit", 0); f > 0 {
			m.MoE.SwigluLimit, m.MoE.SwigluAlpha = f, orFloat(e, "swiglu_alpha", gptOssAlpha)
		}
		if _, set := e.val("gate_input"); set {
			m.MoE.GateInput = e.boolean("gate_input")
		}
		if _, set := e.val("parallel_attention"); set {
			m.MoE.ParallelAttention = e.boolean("parallel_attention")
		}
		if f := orFloat(e, "routed_scale", 1); f != 1 {
			m.MoE.RoutedScale = f
		}
	}
	return m
}

// ok reports whether every named key of s resolved, so a rule is only checked on
// values that are themselves valid (their errors are already reported).
func ok(s *scope, keys ...string) bool {
	for _, k := range keys {
		if _, ok := s.val(k); !ok {
			return false
		}
	}
	return true
}

// validateModel checks the rules that tie a model's keys together.
func (c *checker) validateModel(s *scope, m *program.Model) {
	a := s.sections["attention"]
	if ok(a, "heads", "kv_heads") && m.Attention.Heads%m.Attention.KVHeads != 0 {
		d := c.errorf(diag.CodeKVHeadsDivide, a.rangeOf("kv_heads"), "kv_heads (%d) must divide heads (%d)", m.Attention.KVHeads, m.Attention.Heads)
		d.Suggestion = "choose kv_heads among " + divisors(int64(m.Attention.Heads))
	}
	c.validateMLA(a, m)
	c.validateLlama4Attention(s, a, m)
	if m.NormNoBias && m.Norm != program.LayerNorm && ok(s, "norm") {
		// RMSNorm has no bias to drop: the key would change nothing.
		d := c.errorf(diag.CodeOutOfRange, s.rangeOf("norm_bias"), "norm_bias = false drops LayerNorm biases, but norm = %s has none", m.Norm)
		d.Suggestion = "remove norm_bias, or use norm = layernorm"
	}
	if m.Attention.QKNormAfterRope && !m.Attention.QKNorm && ok(a, "qk_norm") {
		// A placement for norms the model does not have would be a key that changes nothing.
		d := c.errorf(diag.CodeOutOfRange, a.rangeOf("qk_norm_after_rope"), "qk_norm_after_rope places the q/k norms, but qk_norm is false")
		d.Suggestion = "set qk_norm = true, or remove qk_norm_after_rope"
	}
	if m.Attention.QKNormFull && m.Attention.MLA && ok(a, "qk_norm", "kv_lora_rank") {
		// Latent attention's queries and keys are rebuilt per head from low-rank latents,
		// which have norms of their own; there is no whole projection for one norm to span.
		d := c.errorf(diag.CodePartialMLA, a.rangeOf("qk_norm"), "qk_norm = full norms the whole query and key projections, which latent attention (kv_lora_rank > 0) does not have")
		d.Suggestion = "use qk_norm = true (per head) with latent attention"
	}
	if m.Position == program.Rotary && ok(s, "position") {
		dim, key := m.Attention.HeadDim, "head_dim"
		if m.Attention.MLA {
			dim, key = m.Attention.QKRopeHeadDim, "qk_rope_head_dim"
		}
		if ok(a, key) && dim%2 != 0 {
			d := c.errorf(diag.CodeOddRotaryDim, a.rangeOf(key), "rotary positions rotate pairs of dimensions, but %s = %d is odd", key, dim)
			d.Suggestion = "use an even " + key + ", or `position = learned`"
		}
	}
	if m.Position == program.Learned && ok(s, "max_position", "seq_len") && m.MaxPosition < m.SeqLen {
		d := c.errorf(diag.CodeShortPositionTable, s.rangeOf("max_position"), "learned positions need max_position >= seq_len, got %d < %d", m.MaxPosition, m.SeqLen)
		d.Suggestion = fmt.Sprintf("set max_position = %d or more", m.SeqLen)
	}
	if e := s.sections["moe"]; e != nil && m.MoE != nil {
		c.validateMoE(s, e, m)
	}
	c.validateRopeScaling(s, m)
}

func (c *checker) validateMLA(a *scope, m *program.Model) {
	at := &m.Attention
	mlaKeys := []string{"qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}
	if !ok(a, append(mlaKeys, "kv_lora_rank", "q_lora_rank")...) {
		return
	}
	if at.KVLoraRank > 0 {
		var missing []string
		for _, k := range mlaKeys {
			if a.i64(k) == 0 {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			d := c.errorf(diag.CodePartialMLA, a.rangeOf("kv_lora_rank"), "kv_lora_rank > 0 turns on latent attention, which also needs %s", strings.Join(missing, ", "))
			d.Suggestion = "set " + strings.Join(missing, ", ") + " in the attention block"
		}
		return
	}
	for _, k := range append(mlaKeys, "q_lora_rank") {
		if a.i64(k) != 0 {
			d := c.errorf(diag.CodePartialMLA, a.rangeOf(k), "%s is a latent-attention field, but kv_lora_rank is 0", k)
			d.Suggestion = "set kv_lora_rank > 0 to use latent attention, or remove " + k
			return
		}
	}
}

func (c *checker) validateMoE(s, e *scope, m *program.Model) {
	moe := m.MoE
	if moe.SharedGate && moe.SharedExperts == 0 && ok(e, "shared_gate", "shared_experts") {
		// A gate with nothing to scale would be a parameter that computes nothing.
		d := c.errorf(diag.CodeOutOfRange, e.rangeOf("shared_gate"), "shared_gate scales the shared experts' output, but shared_experts is 0")
		d.Suggestion = "set shared_experts >= 1, or remove shared_gate"
	}
	c.validateSwiglu(e, m)
	if moe.ParallelAttention && ok(e, "parallel_attention", "parallel_dense") {
		// Arctic's layer: the dense FFN beside the experts is what gets the norm of its own;
		// without one, or under another placement, the key would describe another layer.
		if !moe.ParallelDense {
			d := c.errorf(diag.CodeOutOfRange, e.rangeOf("parallel_attention"), "parallel_attention moves the experts beside attention and keeps a dense FFN after it, but parallel_dense is false")
			d.Suggestion = "set parallel_dense = true, or remove parallel_attention"
		}
		if p := m.NormPlacement; p != "" && p != program.PreNorm && ok(s, "norm_placement") {
			d := c.errorf(diag.CodeOutOfRange, e.rangeOf("parallel_attention"), "parallel_attention is defined for pre-norm layers, not norm_placement = %s", p)
			d.Suggestion = "use norm_placement = pre, or remove parallel_attention"
		}
	}
	if ok(e, "top_k", "experts") && moe.TopK > moe.Experts {
		d := c.errorf(diag.CodeTopKExceedsExperts, e.rangeOf("top_k"), "top_k (%d) exceeds experts (%d)", moe.TopK, moe.Experts)
		d.Suggestion = fmt.Sprintf("use top_k <= %d", moe.Experts)
	}
	if ok(e, "groups", "topk_groups", "experts") {
		switch {
		case moe.TopKGroups > 0 && moe.Groups == 0:
			c.errorf(diag.CodeBadRoutingGroups, e.rangeOf("topk_groups"), "topk_groups needs groups > 0")
		case moe.Groups > 0 && moe.Experts%moe.Groups != 0:
			d := c.errorf(diag.CodeBadRoutingGroups, e.rangeOf("groups"), "groups (%d) must divide experts (%d)", moe.Groups, moe.Experts)
			d.Suggestion = "choose groups among " + divisors(int64(moe.Experts))
		case moe.TopKGroups > moe.Groups:
			c.errorf(diag.CodeBadRoutingGroups, e.rangeOf("topk_groups"), "topk_groups (%d) exceeds groups (%d)", moe.TopKGroups, moe.Groups)
		}
	}
	if !ok(s, "layers") || !ok(e, "layers", "every", "first_dense") {
		return
	}
	if len(moe.Layers) > 0 {
		for _, k := range []string{"every", "first_dense"} {
			if e.written(k) {
				d := c.errorf(diag.CodeLayersWithEvery, e.rangeOf(k), "%s has no effect with an explicit moe.layers list", k)
				d.Suggestion = "remove " + k + " or the layers list"
			}
		}
		for i, l := range moe.Layers {
			switch {
			case l < 0 || l >= m.Layers:
				d := c.errorf(diag.CodeBadMoELayers, e.rangeOf("layers"), "moe.layers names layer %d, but the model has layers 0..%d", l, m.Layers-1)
				d.Suggestion = "layers are numbered from 0"
				return
			case i > 0 && l <= moe.Layers[i-1]:
				c.errorf(diag.CodeBadMoELayers, e.rangeOf("layers"), "moe.layers must be sorted and without repeats (%d after %d)", l, moe.Layers[i-1])
				return
			}
		}
		return
	}
	if moe.FirstDense >= m.Layers {
		d := c.errorf(diag.CodeFirstDenseTooLarge, e.rangeOf("first_dense"), "first_dense (%d) leaves no layer for the MoE: the model has %d layers", moe.FirstDense, m.Layers)
		d.Suggestion = fmt.Sprintf("use first_dense < %d", m.Layers)
		return
	}
	// The first MoE layer is first_dense + every - 1 (program.MoE.IsMoELayer); computed,
	// not searched, because layers may be any size a user writes.
	if int64(moe.FirstDense)+int64(moe.Every)-1 < int64(m.Layers) {
		return
	}
	d := c.errorf(diag.CodeNoMoELayer, e.rangeOf("every"), "every = %d places no MoE layer in %d layers after first_dense = %d", moe.Every, m.Layers, moe.FirstDense)
	d.Suggestion = fmt.Sprintf("use every <= %d", m.Layers-moe.FirstDense)
}

// divisors lists n's divisors for a suggestion ("1, 2, 4, 8").
func divisors(n int64) string {
	var out []string
	for i := int64(1); i <= n && i <= 1<<16 && len(out) < 12; i++ {
		if n%i == 0 {
			out = append(out, fmt.Sprint(i))
		}
	}
	return strings.Join(out, ", ")
}

// errorCount is the number of errors reported so far.
func (c *checker) errorCount() int {
	n := 0
	for _, d := range c.r.diags {
		if d.Severity == diag.Error {
			n++
		}
	}
	return n
}

// countModel counts m's parameters and reports, at rng, a count that does not fit in 64
// bits: every later phase (the planner, the report, code generation) reads the counts as
// int64, and a wrapped count would be a negative model that "fits" anywhere. Each size is
// accepted on its own; only their product overflows, so the note names the sizes.
//
// It reports whether the counts fit.
func (c *checker) countModel(m *program.Model, rng diag.Range, what string) bool {
	_, err := analysis.CountChecked(m)
	var ovf *analysis.OverflowError
	if !errors.As(err, &ovf) {
		return true
	}
	d := c.errorf(diag.CodeParamCountOverflow, rng, "%s has more than %s parameters: its %s count overflows a 64-bit integer", what, analysis.MaxCountText, ovf.Part)
	sizes := fmt.Sprintf("vocab = %d, d_model = %d, layers = %d, ffn.hidden = %d", m.Vocab, m.DModel, m.Layers+m.Encoder, m.FFN.Hidden)
	if m.MoE != nil {
		sizes += fmt.Sprintf(", moe.experts = %d, moe.expert_hidden = %d", m.MoE.Experts, m.MoE.ExpertHidden)
	}
	d.Notes = append(d.Notes, "its sizes: "+sizes)
	d.Suggestion = "check the sizes for a suffix too many (4M written for 4k)"
	return false
}
