package nn

import (
	"errors"
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/quant"
	"github.com/moec-dev/moec/runtime/weights"
)

// Float is the element type the kernels are instantiated with.
type Float = blas.Float

// Param is one trainable tensor: row-major weights and their accumulated gradient.
// Projection shapes are [out, in] as in Hugging Face checkpoints.
type Param struct {
	ID    params.ID // the structured identity (compiler/params); code reads it, not Name
	Name  string
	Shape []int
	W, G  []float32
	// Expert marks a routed expert's tensor: in a sharded run it is held by the rank that
	// owns the expert and its gradient is reduced over the ranks holding the same experts.
	Expert bool
}

// tensor is a parameter inside the generic core.
type tensor[F Float] struct {
	name  string
	shape []int
	w, g  []F
	// base and off say that w and g are views of base's buffers at off (an expert's slice
	// of the contiguous expert weights); nil for a tensor with its own storage.
	base *tensor[F]
	off  int
	// expert is true for a routed expert's tensors (and their contiguous storage): they
	// are held by the expert-parallel rank that owns the expert and reduced over the
	// ranks that hold the same experts, not over all ranks.
	expert bool
	unit   int // the Unit the tensor belongs to (units.go)
	// q is the quantised weight of a compressed checkpoint (quantized.go); w and g are
	// then nil.
	q *quant.Matrix
	// bf16: the products with this weight multiply in bfloat16 (bf16.go).
	bf16 bool
}

// dims are the sizes every kernel needs, resolved once by program.Model.Dims.
type dims = program.Dims

// ffnParams is one feed-forward network: a dense FFN, a routed expert or a shared expert.
// first is the matrix whose output goes through the activation (gate_proj/w1 when gated,
// up_proj/w1 otherwise); up is the gated branch's linear matrix (nil when not gated).
type ffnParams[F Float] struct {
	act               program.Activation
	hidden            int
	first, up, second *tensor[F] // second is down_proj/w2
	firstB, upB       *tensor[F] // biases, nil without ffn.bias / moe.expert_bias
	secondB           *tensor[F]

	clamp swigluClamp // gpt-oss's clamped SwiGLU (swiglu_clamp.go); zero: plain
}

type attnParams[F Float] struct {
	q, k, v, o     *tensor[F]
	qb, kb, vb, ob *tensor[F] // nil without biases
	thPre, thPost  *tensor[F] // talking heads [H,H], nil when off
	qNorm, kNorm   *tensor[F] // RMSNorm scales over head_dim (qk_norm = full: the whole projection), nil without qk_norm
	sinks          *tensor[F] // per-head sink logits [H], nil when off
}

type moeParams[F Float] struct {
	gate, gateB *tensor[F] // router [E, RouterIn] and its optional bias [E]
	// correction is aux_free_bias's selection bias [E] (e_score_correction_bias,
	// routing_bias.go): it moves by UpdateRouterBias, never by its gradient; nil without.
	correction  *tensor[F]
	routerEmbed *tensor[F] // the model's token-embedding router table (core.routerEmbed), else nil
	// w1, w3, w2 hold all experts contiguously ([E,h,D], [E,h,D], [E,D,h]) so one backing
	// array serves the grouped products; the experts' tensors are slices of them.
	w1, w3, w2 *tensor[F]
	experts    []*ffnParams[F]
	shared     []*ffnParams[F]
	sharedGate *tensor[F] // [1, D] shared_expert_gate (shared_gate.go), nil without moe.shared_gate
}

type layer[F Float] struct {
	// norm1/norm2 normalise the attention/FFN input (pre and sandwich placement); postA/
	// postF normalise their output (sandwich) or the residual sum (post). Biases only for
	// layernorm; nil where the placement has no such norm.
	norm1, norm1b, norm2, norm2b *tensor[F]
	postA, postAb, postF, postFb *tensor[F]
	kvOwner                      int // the layer whose keys and values this one uses (itself without share_kv)
	attn                         attnParams[F]
	dense                        *ffnParams[F] // nil in MoE layers unless parallel_dense
	moe                          *moeParams[F] // nil in dense layers

	// normR, normRb are the dense FFN's own norm in an MoE layer of a parallel_attention
	// model (Arctic's residual_layernorm); nil otherwise (parallel.go).
	normR, normRb *tensor[F]
	window        int // this layer's sliding window (attention.window, full_every); 0: full causal
	llama         llamaLayer
	mla           *mlaParams[F] // multi-head latent attention (mla.go) in place of q, k, v; nil without
}

// core is the generic model: parameters plus the buffers of the last (B, T) it ran.
type core[F Float] struct {
	cfg    *program.Model
	d      dims
	embed  *tensor[F]
	pos    *tensor[F] // learned positions, else nil
	normF  *tensor[F] // final norm, nil when FinalNorm is false
	normFb *tensor[F]
	head   *tensor[F] // lm_head; nil when tied (the embedding is used)
	headB  *tensor[F] // lm_head.bias (head_bias), nil without one
	layers []*layer[F]
	params []*tensor[F]
	ws     *workspace[F]
	// routerEmbed is the token-embedding router table [V, RouterIn], one for the model
	// and read by every MoE layer's router (nil for hidden-state routing). It lives in
	// the embedding unit: the rows a step needs are gathered once with the token
	// embeddings (workspace.rows, which every layer's moeWS shares), and every layer's
	// gradient for them collects in workspace.dRows until the embedding's backward
	// scatters it into the table.
	routerEmbed *tensor[F]
	// expertFirst and expertCount are the routed experts this core holds: all of them
	// unless it is an expert-parallel rank's share (see shard.go).
	expertFirst, expertCount int
	shard                    *shardState[F] // nil for a model that runs alone
	// storage lists every tensor that owns its buffers (listed or not), in creation
	// order: what a Unit's flat buffers are made of.
	storage []*tensor[F]
	// buffers counts the times step buffers were (re)allocated; WorkspaceBytes measures
	// them again only when it moves.
	buffers   int
	measured  int
	wsMeasure [3]int64
	quantized bool // some weights are quantised (quantized.go): no training
	inArena   bool // the weights share one huge-page allocation (hugepages.go)
}

// Model is a trainable float32 model.
type Model struct {
	c      *core[float32]
	params []*Param
}

// New checks that the runtime computes everything m describes and initialises weights:
// normal(0, 0.02) for matrices, with output projections scaled by 1/sqrt(2·layers) as GPT-2
// does so the residual stream does not grow with depth; ones for norm scales; zeros for
// biases. Initialisation draws from rng.PurposeInit streams keyed by the parameter's index.
func New(m *program.Model, seed int64) (*Model, error) {
	c, err := newCore[float32](m, seed)
	if err != nil {
		return nil, err
	}
	return listParams(m, c)
}

// listParams wraps c as a Model with its parameters listed.
func listParams(m *program.Model, c *core[float32]) (*Model, error) {
	layout, err := params.Walk(m)
	if err != nil {
		return nil, fmt.Errorf("nn: %w", err)
	}
	ids := make(map[string]params.ID, len(layout))
	for _, p := range layout {
		ids[p.Name] = p.ID
	}
	out := &Model{c: c}
	for _, t := range c.params {
		id, ok := ids[t.name]
		if !ok {
			return nil, fmt.Errorf("nn: internal error: parameter %s is not in the model's parameter walk", t.name)
		}
		out.params = append(out.params, &Param{ID: id, Name: t.name, Shape: t.shape, W: t.w, G: t.g, Expert: t.expert})
	}
	return out, nil
}

// Config returns the model description the Model was built from.
func (m *Model) Config() *program.Model { return m.c.cfg }

// Params lists every trainable tensor exactly once, in a stable order (embedding, layers in
// order, final norm, head). A tied head is not listed: its weights are the embedding's.
func (m *Model) Params() []*Param { return m.params }

// ZeroGrad clears every accumulated gradient.
func (m *Model) ZeroGrad() { m.c.zeroGrad() }

func (c *core[F]) zeroGrad() {
	for _, t := range c.params {
		clear(t.g)
	}
}

// checkSupported refuses what the runtime does not compute, naming the feature.
func checkSupported(m *program.Model) error {
	a := m.Attention
	unsupported := []struct {
		on      bool
		feature string
	}{
		{m.Encoder > 0, "encoder-decoder models (encoder layers)"},
		{a.LatentAttention() && (a.QKNorm || a.TalkingHeads || a.Sinks || a.ShareKV > 1 || a.SharesWeights() || a.ClipQKV > 0 ||
			a.NopeEvery > 0 || a.ChunkSize > 0 || a.QKL2Norm || a.NopeTemperature > 0 || (m.Position != program.Rotary && m.Position != program.NoPosition) ||
			m.Norm == program.LayerNorm),
			"multi-head latent attention (MLA) with qk_norm, talking heads, sinks, share_kv, share_weights, clip_qkv, Llama 4's attention, other than rotary positions or layernorm"},
		{a.LatentAttention() && (a.KVLoraRank <= 0 || a.QKRopeHeadDim%2 != 0 || a.QKNopeHeadDim < 0 || a.VHeadDim <= 0 || a.QLoraRank < 0 || a.QKNopeHeadDim+a.QKRopeHeadDim <= 0),
			"multi-head latent attention (MLA) without positive kv_lora_rank and v_head_dim and an even qk_rope_head_dim"},
		{m.Position == program.Relative, "relative position bias (position = relative)"},
		{m.NormPlacement != "" && m.NormPlacement != program.PreNorm && m.NormPlacement != program.PostNorm &&
			m.NormPlacement != program.SandwichNorm, fmt.Sprintf("norm placement %q", m.NormPlacement)},
		{m.MTPDepth > 0, "multi-token prediction (mtp_depth)"},
		{(a.NopeEvery > 0 || a.ChunkSize > 0 || a.QKL2Norm) && (a.ShareKV > 1 || a.SharesWeights() || a.QKNorm || a.Window > 0),
			"Llama 4's attention (nope_every, chunk, qk_l2_norm) with share_kv, share_weights, qk_norm or a window"},
	}
	if moe := m.MoE; moe != nil && moe.Experts > 0 {
		unsupported = append(unsupported, []struct {
			on      bool
			feature string
		}{
			{moe.SparsemixerEps > 0 && (moe.TopK != 2 || moe.Normalize || moe.Groups > 0 || moe.AuxFreeBias > 0 || moe.RoutedScaleOrOne() != 1 || moe.Experts < 2),
				"sparsemixer routing (moe.sparsemixer_eps) other than Phi-3.5-MoE's: two experts of at least two, no renormalisation, routed_scale, groups or bias balancing"},
			{moe.EncoderMoE, "encoder MoE layers"},
			{moe.ParallelAttention && (!moe.ParallelDense || placement(m) != program.PreNorm),
				"experts beside attention (moe.parallel_attention) without parallel_dense or under another placement than pre"},
		}...)
	}
	for _, u := range unsupported {
		if u.on {
			return &UnsupportedError{Feature: u.feature}
		}
	}
	return nil
}

func resolveDims(m *program.Model) (dims, error) {
	d, err := m.Dims()
	if err != nil {
		return d, fmt.Errorf("nn: %w", err)
	}
	return d, nil
}

func expertActivation(m *program.Model) program.Activation {
	if m.MoE != nil && m.MoE.Activation != "" {
		return m.MoE.Activation
	}
	return m.FFN.Activation
}

// initKind says how a tensor starts.
type initKind int

const (
	initNormal initKind = iota
	initResidual
	initOnes
	initZeros
	initIdentity // talking-heads mixing starts as the identity: plain attention
)

// builder creates tensors in parameter order and draws their initial values.
type builder[F Float] struct {
	seed   int64
	c      *core[F]
	layers int
	// index is the position the next listed tensor has in the whole model's parameter
	// list. It keys the tensor's initial values, so a rank that holds only some experts
	// draws exactly the values the single-rank model draws for them.
	index int
	// first and count are the routed experts this model holds (all when count is 0).
	first, count int
	unit         int // the Unit tensors being added belong to
	// bare names the tensors that get no float32 buffers and no initial values (their
	// weights arrive quantised: quantized.go); nil for none.
	bare func(name string) bool
	// arena holds the whole model's weights on huge pages (hugepages.go); nil for a
	// sharded or partly bare model, whose buffers are allocated one by one.
	arena *weightArena[F]
}

func (b *builder[F]) add(name string, kind initKind, listed bool, shape ...int) *tensor[F] {
	n := 1
	for _, s := range shape {
		n *= s
	}
	t := &tensor[F]{name: name, shape: shape, unit: b.unit}
	if b.bare == nil || !b.bare(name) {
		t.w, t.g = b.arena.take(n), make([]F, n)
	}
	b.c.storage = append(b.c.storage, t)
	b.fill(t, kind, b.index)
	if listed {
		b.c.params = append(b.c.params, t)
		b.index++
	}
	return t
}

func (b *builder[F]) fill(t *tensor[F], kind initKind, index int) {
	if t.w == nil {
		return // bare
	}
	weights.Fill(t.w, t.shape, initOf(kind), b.seed, index, b.layers)
}

// initOf is runtime/weights' name of a way a tensor starts (weights.InitOf gives the same
// for every parameter, from its identity: TestInitialMatchesNew).
func initOf(kind initKind) weights.Init {
	switch kind {
	case initResidual:
		return weights.Residual
	case initOnes:
		return weights.Ones
	case initZeros:
		return weights.Zeros
	case initIdentity:
		return weights.Identity
	}
	return weights.Normal
}

// slice makes a listed tensor that views part of a contiguous buffer.
func (b *builder[F]) slice(all *tensor[F], name string, off int, shape ...int) *tensor[F] {
	n := 1
	for _, s := range shape {
		n *= s
	}
	t := &tensor[F]{name: name, shape: shape, base: all, off: off, expert: all.expert, unit: all.unit}
	if all.w != nil {
		t.w, t.g = all.w[off:off+n:off+n], all.g[off:off+n:off+n]
	}
	b.c.params = append(b.c.params, t)
	b.index++
	return t
}

func newCore[F Float](m *program.Model, seed int64) (*core[F], error) {
	return newCoreExperts[F](m, seed, 0, 0)
}

// newCoreExperts builds the model holding only routed experts [first, first+count) of
// every MoE layer (all of them when count is 0): an expert-parallel rank's share.
func newCoreExperts[F Float](m *program.Model, seed int64, first, count int) (*core[F], error) {
	return newCoreBare[F](m, seed, first, count, nil)
}

// newCoreBare is newCoreExperts leaving the tensors bare names without buffers.
func newCoreBare[F Float](m *program.Model, seed int64, first, count int, bare func(string) bool) (*core[F], error) {
	if m == nil {
		return nil, errors.New("nn: nil model")
	}
	if err := checkSupported(m); err != nil {
		return nil, err
	}
	d, err := resolveDims(m)
	if err != nil {
		return nil, err
	}
	c := &core[F]{cfg: m, d: d}
	if count == 0 {
		first, count = 0, d.E
	}
	if d.E > 0 && (first < 0 || count < 1 || first+count > d.E) {
		return nil, fmt.Errorf("nn: experts %d..%d are not among the model's %d", first, first+count-1, d.E)
	}
	c.expertFirst, c.expertCount = first, count
	b := &builder[F]{seed: seed, c: c, layers: d.L, first: first, count: count, bare: bare}
	if bare == nil && first == 0 && count == d.E {
		b.arena = newWeightArena[F](m)
		c.inArena = b.arena != nil
		defer b.arena.settle()
	}
	ln := m.Norm == program.LayerNorm
	c.embed = b.add("model.embed_tokens.weight", initNormal, true, d.V, d.D)
	if d.MaxPos > 0 {
		c.pos = b.add("model.embed_positions.weight", initNormal, true, d.MaxPos, d.D)
	}
	for i := 0; i < d.L; i++ {
		b.unit = i + 1
		p := fmt.Sprintf("model.layers.%d.", i)
		l := &layer[F]{window: int(m.Attention.WindowAt(i)), llama: newLlamaLayer(m, i)}
		if placement(m) != program.PostNorm {
			l.norm1, l.norm1b = b.norm(p+"input_layernorm", ln)
		}
		if m.Attention.LatentAttention() {
			l.kvOwner = i
			l.mla = b.latent(p, m, &l.attn) // mla.go
		} else {
			b.attention(p, i, l)
		}
		// Names follow Llama for pre-norm (its post_attention_layernorm is the FFN's input
		// norm) and Gemma 2 for sandwich norm (four norms per layer).
		switch placement(m) {
		case program.PreNorm:
			l.norm2, l.norm2b = b.norm(p+"post_attention_layernorm", ln)
		case program.SandwichNorm:
			l.postA, l.postAb = b.norm(p+"post_attention_layernorm", ln)
			l.norm2, l.norm2b = b.norm(p+"pre_feedforward_layernorm", ln)
		case program.PostNorm:
			l.postA, l.postAb = b.norm(p+"post_attention_layernorm", ln)
		}
		moeLayer := m.IsMoELayer(i)
		if moeLayer && m.MoE.ParallelAttention {
			l.normR, l.normRb = b.norm(p+"residual_layernorm", ln)
		}
		if !moeLayer || m.MoE.ParallelDense {
			// A residual-MoE layer keeps its dense FFN next to the experts.
			l.dense = b.ffn(p+"mlp.", m.FFN.Activation, d.Hidden, m.FFN.Bias, "gate_proj", "up_proj", "down_proj", "up_proj")
		}
		if moeLayer {
			l.moe = b.moe(p+"block_sparse_moe.", m)
		}
		if placement(m) != program.PreNorm {
			l.postF, l.postFb = b.norm(p+"post_feedforward_layernorm", ln)
		}
		c.layers = append(c.layers, l)
	}
	if m.MoE != nil && m.MoE.Router == program.RouteTokenEmbedding {
		// Created after the layers so that no other tensor's initial values move, but in
		// the embedding unit, whose gather it shares.
		for _, l := range c.layers {
			if l.moe == nil {
				continue
			}
			if c.routerEmbed == nil {
				b.unit = 0
				c.routerEmbed = b.add("model.router_embed.weight", initNormal, true, d.V, d.RouterIn)
			}
			l.moe.routerEmbed = c.routerEmbed
		}
	}
	b.unit = d.L + 1
	if m.FinalNorm {
		c.normF = b.add("model.norm.weight", initOnes, true, d.D)
		if ln && !m.NormNoBias {
			c.normFb = b.add("model.norm.bias", initZeros, true, d.D)
		}
	}
	if !m.TieEmbeddings {
		c.head = b.add("lm_head.weight", initNormal, true, d.V, d.D)
	}
	if m.HeadBias {
		c.headB = b.add("lm_head.bias", initZeros, true, d.V)
	}
	return c, nil
}

// attention creates layer i's (prefix p) grouped-query attention tensors.
func (b *builder[F]) attention(p string, i int, l *layer[F]) {
	m, d := b.c.cfg, b.c.d
	a := &l.attn
	a.q = b.add(p+"self_attn.q_proj.weight", initNormal, true, d.QDim, d.D)
	if m.Attention.BiasQKV {
		a.qb = b.add(p+"self_attn.q_proj.bias", initZeros, true, d.QDim)
	}
	// Cross-layer attention: only the first layer of each group of share_kv layers
	// projects keys and values; the others attend to that layer's.
	l.kvOwner = i - i%d.ShareKV
	if l.kvOwner == i {
		a.k = b.add(p+"self_attn.k_proj.weight", initNormal, true, d.KVDim, d.D)
		if m.Attention.BiasQKV {
			a.kb = b.add(p+"self_attn.k_proj.bias", initZeros, true, d.KVDim)
		}
		a.v = b.add(p+"self_attn.v_proj.weight", initNormal, true, d.KVDim, d.D)
		if m.Attention.BiasQKV {
			a.vb = b.add(p+"self_attn.v_proj.bias", initZeros, true, d.KVDim)
		}
	}
	a.o = b.add(p+"self_attn.o_proj.weight", initResidual, true, d.D, d.QDim)
	if m.Attention.BiasOut {
		a.ob = b.add(p+"self_attn.o_proj.bias", initZeros, true, d.D)
	}
	if m.Attention.QKNorm {
		qw, kw := qkNormWidths(m, d)
		a.qNorm = b.add(p+"self_attn.q_norm.weight", initOnes, true, qw)
		if l.kvOwner == i || m.Attention.QKNormAfterRope { // after rope every layer norms its keys
			a.kNorm = b.add(p+"self_attn.k_norm.weight", initOnes, true, kw)
		}
	}
	if m.Attention.Sinks {
		a.sinks = b.add(p+"self_attn.sinks", initZeros, true, d.H)
	}
	if m.Attention.TalkingHeads {
		a.thPre = b.add(p+"self_attn.talking_heads_pre.weight", initIdentity, true, d.H, d.H)
		a.thPost = b.add(p+"self_attn.talking_heads_post.weight", initIdentity, true, d.H, d.H)
	}
}

// ffn creates a feed-forward network's matrices under the given names: gate, up and down
// when gated; plain (up_proj for a dense FFN, w1 for an expert) and down when not.
func (b *builder[F]) ffn(prefix string, act program.Activation, hidden int, bias bool, gate, up, down, plain string) *ffnParams[F] {
	d := b.c.d.D
	f := &ffnParams[F]{act: act, hidden: hidden}
	if act.Gated() {
		f.first, f.firstB = b.weightBias(prefix+gate, initNormal, bias, hidden, d)
		f.up, f.upB = b.weightBias(prefix+up, initNormal, bias, hidden, d)
	} else {
		f.first, f.firstB = b.weightBias(prefix+plain, initNormal, bias, hidden, d)
	}
	f.second, f.secondB = b.weightBias(prefix+down, initResidual, bias, d, hidden)
	return f
}

// weightBias adds name.weight [out, in] and, when bias, name.bias [out].
func (b *builder[F]) weightBias(name string, kind initKind, bias bool, out, in int) (*tensor[F], *tensor[F]) {
	w := b.add(name+".weight", kind, true, out, in)
	if !bias {
		return w, nil
	}
	return w, b.add(name+".bias", initZeros, true, out)
}

func (b *builder[F]) moe(prefix string, m *program.Model) *moeParams[F] {
	d := b.c.d
	mp := &moeParams[F]{}
	mp.gate = b.add(prefix+"gate.weight", initNormal, true, d.E, d.RouterIn)
	if m.MoE.RouterBias {
		mp.gateB = b.add(prefix+"gate.bias", initZeros, true, d.E)
	}
	if m.MoE.AuxFreeBias > 0 { // routing_bias.go
		mp.correction = b.add(prefix+"gate.e_score_correction_bias", initZeros, true, d.E)
	}
	act := expertActivation(m)
	h := d.EHidden
	// The contiguous buffers are not listed themselves; each expert's slices are. They are
	// still drawn per expert slice (below) so an expert's start does not depend on E.
	nE := b.count
	mp.w1 = b.add(prefix+"experts.w1", initZeros, false, nE, h, d.D)
	if act.Gated() {
		mp.w3 = b.add(prefix+"experts.w3", initZeros, false, nE, h, d.D)
	}
	mp.w2 = b.add(prefix+"experts.w2", initZeros, false, nE, d.D, h)
	for _, t := range []*tensor[F]{mp.w1, mp.w2, mp.w3} {
		if t != nil {
			t.expert = true
		}
	}
	// Listed tensors per expert: w1, w2 and (gated) w3 weights, each with its bias.
	perExpert := 2
	if act.Gated() {
		perExpert = 3
	}
	if m.MoE.ExpertBias {
		perExpert *= 2
	}
	b.index += b.first * perExpert
	for le := 0; le < nE; le++ {
		e := b.first + le
		ep := fmt.Sprintf("%sexperts.%d.", prefix, e)
		f := &ffnParams[F]{act: act, hidden: h, clamp: swigluClamp{limit: m.MoE.SwigluLimit, alpha: m.MoE.SwigluAlpha}}
		f.first = b.slice(mp.w1, ep+"w1.weight", le*h*d.D, h, d.D)
		b.fill(f.first, initNormal, b.index-1)
		if m.MoE.ExpertBias {
			f.firstB = b.add(ep+"w1.bias", initZeros, true, h)
			f.firstB.expert = true
		}
		f.second = b.slice(mp.w2, ep+"w2.weight", le*h*d.D, d.D, h)
		b.fill(f.second, initResidual, b.index-1)
		if m.MoE.ExpertBias {
			f.secondB = b.add(ep+"w2.bias", initZeros, true, d.D)
			f.secondB.expert = true
		}
		if act.Gated() {
			f.up = b.slice(mp.w3, ep+"w3.weight", le*h*d.D, h, d.D)
			b.fill(f.up, initNormal, b.index-1)
			if m.MoE.ExpertBias {
				f.upB = b.add(ep+"w3.bias", initZeros, true, h)
				f.upB.expert = true
			}
		}
		mp.experts = append(mp.experts, f)
	}
	b.index += (d.E - b.first - nE) * perExpert
	for s := 0; s < d.Shared; s++ {
		mp.shared = append(mp.shared, b.ffn(fmt.Sprintf("%sshared_experts.%d.", prefix, s), act, d.SHidden, m.MoE.ExpertBias, "w1", "w3", "w2", "w1"))
	}
	if hasSharedGate(m) {
		mp.sharedGate = b.add(prefix+sharedGateName, initNormal, true, 1, d.D)
	}
	return mp
}

// placement is the model's norm placement, pre-norm when unset.
func placement(m *program.Model) program.NormPlacement {
	if m.NormPlacement == "" {
		return program.PreNorm
	}
	return m.NormPlacement
}

// norm adds a norm's scale (ones) and, for layernorm, its bias (zeros).
func (b *builder[F]) norm(name string, layerNorm bool) (*tensor[F], *tensor[F]) {
	w := b.add(name+".weight", initOnes, true, b.c.d.D)
	if !layerNorm || b.c.cfg.NormNoBias { // norm_bias = false: LayerNorms without biases (DBRX)
		return w, nil
	}
	return w, b.add(name+".bias", initZeros, true, b.c.d.D)
}
