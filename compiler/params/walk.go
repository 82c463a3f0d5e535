package params

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// Role says what a parameter does in the model. Norm roles are named after the place the
// norm has in a layer; the placement (pre, post, sandwich) decides which of them exist.
type Role uint8

// The roles, in the order a layer lists them.
const (
	RoleEmbed        Role = iota // token embedding [V, D]
	RolePositions                // learned positions [MaxPos, D]
	RoleAttnInNorm               // input_layernorm: the attention input (pre, sandwich)
	RoleQ                        // query projection [H·Dh, D]
	RoleK                        // key projection [KV·Dh, D] (share_kv: the group's first layer only)
	RoleV                        // value projection [KV·Dh, D]
	RoleO                        // output projection [D, H·Dh]
	RoleQNorm                    // qk_norm scale for queries
	RoleKNorm                    // qk_norm scale for keys
	RoleSinks                    // learned sink logits [H]
	RoleTalkingPre               // talking-heads mixing before the softmax [H, H]
	RoleTalkingPost              // talking-heads mixing after the softmax [H, H]
	RolePostAttnNorm             // post_attention_layernorm (the FFN input under pre placement)
	RolePreFFNNorm               // pre_feedforward_layernorm (sandwich)
	RoleResidualNorm             // residual_layernorm: the dense FFN's own norm beside the experts (parallel_attention)
	RoleFFNIn                    // dense FFN: gate_proj when gated, up_proj otherwise [hidden, D]
	RoleFFNUp                    // dense FFN: up_proj of a gated FFN [hidden, D]
	RoleFFNDown                  // dense FFN: down_proj [D, hidden]
	RoleRouter                   // router projection [E, RouterIn]
	RoleExpertIn                 // routed expert w1 [EHidden, D]
	RoleExpertDown               // routed expert w2 [D, EHidden]
	RoleExpertUp                 // routed expert w3 (gated) [EHidden, D]
	RoleSharedIn                 // shared expert w1
	RoleSharedUp                 // shared expert w3 (gated)
	RoleSharedDown               // shared expert w2
	RoleSharedGate               // shared_expert_gate [1, D]
	RolePostFFNNorm              // post_feedforward_layernorm (post, sandwich)
	RoleRouterEmbed              // the model's token-embedding router table [V, RouterIn]
	RoleFinalNorm                // the norm before the head
	RoleHead                     // lm_head [V, D] (absent when tied)
	// Multi-head latent attention (DeepSeek-V2/V3), in the place of RoleQ, RoleK and RoleV;
	// its output projection is RoleO [D, H·v_head_dim]. qk = qk_nope_head_dim +
	// qk_rope_head_dim. Listed after RoleHead so the numbers of the roles above stay.
	RoleQA               // q_a_proj [q_lora_rank, D]
	RoleQANorm           // q_a_layernorm [q_lora_rank]
	RoleQB               // q_b_proj [H·qk, q_lora_rank]
	RoleKVA              // kv_a_proj_with_mqa [kv_lora_rank + qk_rope_head_dim, D]
	RoleKVANorm          // kv_a_layernorm [kv_lora_rank]
	RoleKVB              // kv_b_proj [H·(qk_nope_head_dim + v_head_dim), kv_lora_rank]
	RoleRouterCorrection // e_score_correction_bias [E]: aux-free balancing's selection bias, not trained by gradients
)

var roleNames = [...]string{
	RoleEmbed: "embed", RolePositions: "positions", RoleAttnInNorm: "attn_in_norm", RoleQ: "q", RoleK: "k",
	RoleV: "v", RoleO: "o", RoleQNorm: "q_norm", RoleKNorm: "k_norm", RoleSinks: "sinks",
	RoleTalkingPre: "talking_pre", RoleTalkingPost: "talking_post", RolePostAttnNorm: "post_attn_norm",
	RolePreFFNNorm: "pre_ffn_norm", RoleFFNIn: "ffn_in", RoleFFNUp: "ffn_up", RoleFFNDown: "ffn_down",
	RoleRouter: "router", RoleExpertIn: "expert_in", RoleExpertDown: "expert_down", RoleExpertUp: "expert_up",
	RoleSharedIn: "shared_in", RoleSharedUp: "shared_up", RoleSharedDown: "shared_down",
	RoleSharedGate: "shared_gate", RoleResidualNorm: "residual_norm", RolePostFFNNorm: "post_ffn_norm", RoleRouterEmbed: "router_embed",
	RoleFinalNorm: "final_norm", RoleHead: "head",
	RoleQA: "q_a", RoleQANorm: "q_a_norm", RoleQB: "q_b", RoleKVA: "kv_a", RoleKVANorm: "kv_a_norm", RoleKVB: "kv_b",
	RoleRouterCorrection: "router_correction",
}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// Routed reports whether r is a routed expert's tensor: held by the expert-parallel rank
// that owns the expert.
func (r Role) Routed() bool { return r == RoleExpertIn || r == RoleExpertDown || r == RoleExpertUp }

// Norm reports whether r is a norm scale (or, for layernorm, its bias).
func (r Role) Norm() bool {
	switch r {
	case RoleAttnInNorm, RolePostAttnNorm, RolePreFFNNorm, RolePostFFNNorm, RoleFinalNorm, RoleQNorm, RoleKNorm, RoleResidualNorm,
		RoleQANorm, RoleKVANorm:
		return true
	}
	return false
}

// DenseCounterpart is the dense FFN role an expert role is grown from (w1←gate_proj or
// up_proj, w3←up_proj, w2←down_proj), and false for other roles.
func (r Role) DenseCounterpart() (Role, bool) {
	switch r {
	case RoleExpertIn, RoleSharedIn:
		return RoleFFNIn, true
	case RoleExpertUp, RoleSharedUp:
		return RoleFFNUp, true
	case RoleExpertDown, RoleSharedDown:
		return RoleFFNDown, true
	}
	return 0, false
}

// Shard says which part of a logical tensor a parameter holds: Index of Count equal
// slices along Dim. The zero value is the whole tensor.
type Shard struct {
	Dim          int
	Index, Count int
}

// Whole reports whether s is the whole tensor.
func (s Shard) Whole() bool { return s.Count <= 1 }

// ID is a parameter's structured identity.
type ID struct {
	Role   Role
	Layer  int  // decoder layer, -1 for model-level tensors
	Expert int  // routed or shared expert index, -1 otherwise
	Bias   bool // the bias of the role's projection (or of a layernorm)
	Shard  Shard
}

// String is a short readable form: "L3.expert_down[2].bias".
func (id ID) String() string {
	var b strings.Builder
	if id.Layer >= 0 {
		fmt.Fprintf(&b, "L%d.", id.Layer)
	}
	b.WriteString(id.Role.String())
	if id.Expert >= 0 {
		fmt.Fprintf(&b, "[%d]", id.Expert)
	}
	if id.Bias {
		b.WriteString(".bias")
	}
	if !id.Shard.Whole() {
		fmt.Fprintf(&b, "{%d/%d@%d}", id.Shard.Index, id.Shard.Count, id.Shard.Dim)
	}
	return b.String()
}

// Param is one trainable tensor of a model, without values.
type Param struct {
	ID    ID
	Name  string // the checkpoint and Hugging Face name
	Shape []int
}

// Elements is the number of values the parameter holds.
func (p Param) Elements() int64 {
	n := int64(1)
	for _, s := range p.Shape {
		n *= int64(s)
	}
	return n
}

// SharedGateName is the shared expert gate's name inside an MoE block (Qwen2-MoE's).
const SharedGateName = "shared_expert_gate.weight"

// Walk lists m's parameters in the order the runtime creates them. It refuses models whose
// parameters it cannot list (encoder-decoder, multi-token prediction, relative position
// bias, and latent attention with q/k norms, talking heads, sinks, cross-layer K/V or
// LayerNorms).
func Walk(m *program.Model) ([]Param, error) {
	if m == nil {
		return nil, fmt.Errorf("params: nil model")
	}
	switch {
	case m.Attention.LatentAttention() && (m.Attention.QKNorm || m.Attention.TalkingHeads || m.Attention.Sinks || m.Attention.ShareKV > 1 || m.Norm == program.LayerNorm):
		return nil, fmt.Errorf("params: model %s: multi-head latent attention with qk_norm, talking heads, sinks, share_kv or layernorm has no parameter walker", m.Name)
	case m.Encoder > 0:
		return nil, fmt.Errorf("params: model %s: encoder-decoder models have no parameter walker", m.Name)
	case m.MTPDepth > 0:
		return nil, fmt.Errorf("params: model %s: multi-token prediction has no parameter walker", m.Name)
	case m.Position == program.Relative:
		// T5's bias tables (compiler/analysis counts them) are not among the tensors listed.
		return nil, fmt.Errorf("params: model %s: relative position bias has no parameter walker", m.Name)
	}
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	w := walker{m: m, d: d, layerNorm: d.Norm == program.LayerNorm && !m.NormNoBias}
	w.walk()
	return w.out, nil
}

type walker struct {
	m         *program.Model
	d         program.Dims
	layerNorm bool
	out       []Param
}

func (w *walker) add(id ID, name string, shape ...int) {
	w.out = append(w.out, Param{ID: id, Name: name, Shape: shape})
}

func (w *walker) norm(role Role, layer int, name string) {
	w.add(ID{Role: role, Layer: layer, Expert: -1}, name+".weight", w.d.D)
	if w.layerNorm {
		w.add(ID{Role: role, Layer: layer, Expert: -1, Bias: true}, name+".bias", w.d.D)
	}
}

func (w *walker) weightBias(id ID, name string, bias bool, rows, cols int) {
	w.add(id, name+".weight", rows, cols)
	if bias {
		id.Bias = true
		w.add(id, name+".bias", rows)
	}
}

// ffn lists a dense FFN or a shared expert: in (and up when gated) then down, with the
// naming the caller's family uses.
func (w *walker) ffn(in, up, down ID, prefix string, act program.Activation, hidden int, bias bool, gateName, upName, downName, plainName string) {
	if act.Gated() {
		w.weightBias(in, prefix+gateName, bias, hidden, w.d.D)
		w.weightBias(up, prefix+upName, bias, hidden, w.d.D)
	} else {
		w.weightBias(in, prefix+plainName, bias, hidden, w.d.D)
	}
	w.weightBias(down, prefix+downName, bias, w.d.D, hidden)
}

func (w *walker) walk() {
	m, d := w.m, w.d
	model := func(r Role) ID { return ID{Role: r, Layer: -1, Expert: -1} }
	w.add(model(RoleEmbed), "model.embed_tokens.weight", d.V, d.D)
	if d.MaxPos > 0 {
		w.add(model(RolePositions), "model.embed_positions.weight", d.MaxPos, d.D)
	}
	a := m.Attention
	for i := 0; i < d.L; i++ {
		at := func(r Role) ID { return ID{Role: r, Layer: i, Expert: -1} }
		p := fmt.Sprintf("model.layers.%d.", i)
		if d.Placement != program.PostNorm {
			w.norm(RoleAttnInNorm, i, p+"input_layernorm")
		}
		if a.LatentAttention() {
			w.latent(i, p)
		} else {
			w.attention(i, p)
		}
		switch d.Placement {
		case program.PreNorm, program.PostNorm:
			w.norm(RolePostAttnNorm, i, p+"post_attention_layernorm")
		case program.SandwichNorm:
			w.norm(RolePostAttnNorm, i, p+"post_attention_layernorm")
			w.norm(RolePreFFNNorm, i, p+"pre_feedforward_layernorm")
		}
		moeLayer := m.IsMoELayer(i)
		if moeLayer && m.MoE.ParallelAttention {
			w.norm(RoleResidualNorm, i, p+"residual_layernorm")
		}
		if !moeLayer || m.MoE.ParallelDense {
			w.ffn(at(RoleFFNIn), at(RoleFFNUp), at(RoleFFNDown), p+"mlp.", d.FFNActivation, d.Hidden, m.FFN.Bias,
				"gate_proj", "up_proj", "down_proj", "up_proj")
		}
		if moeLayer {
			mp := p + "block_sparse_moe."
			w.weightBias(at(RoleRouter), mp+"gate", m.MoE.RouterBias, d.E, d.RouterIn)
			if m.MoE.AuxFreeBias > 0 {
				// DeepSeek-V3's selection bias: a buffer in transformers, kept with the weights.
				w.add(at(RoleRouterCorrection), mp+"gate.e_score_correction_bias", d.E)
			}
			gated := d.ExpertActivation.Gated()
			bias := m.MoE.ExpertBias
			for e := 0; e < d.E; e++ {
				ex := func(r Role) ID { return ID{Role: r, Layer: i, Expert: e} }
				ep := fmt.Sprintf("%sexperts.%d.", mp, e)
				w.weightBias(ex(RoleExpertIn), ep+"w1", bias, d.EHidden, d.D)
				w.weightBias(ex(RoleExpertDown), ep+"w2", bias, d.D, d.EHidden)
				if gated {
					w.weightBias(ex(RoleExpertUp), ep+"w3", bias, d.EHidden, d.D)
				}
			}
			for s := 0; s < d.Shared; s++ {
				sh := func(r Role) ID { return ID{Role: r, Layer: i, Expert: s} }
				w.ffn(sh(RoleSharedIn), sh(RoleSharedUp), sh(RoleSharedDown), fmt.Sprintf("%sshared_experts.%d.", mp, s),
					d.ExpertActivation, d.SHidden, bias, "w1", "w3", "w2", "w1")
			}
			if m.MoE.SharedGate && d.Shared > 0 {
				w.add(at(RoleSharedGate), mp+SharedGateName, 1, d.D)
			}
		}
		if d.Placement != program.PreNorm {
			w.norm(RolePostFFNNorm, i, p+"post_feedforward_layernorm")
		}
	}
	if m.MoE != nil && m.MoE.Router == program.RouteTokenEmbedding {
		for i := 0; i < d.L; i++ {
			if m.IsMoELayer(i) {
				w.add(model(RoleRouterEmbed), "model.router_embed.weight", d.V, d.RouterIn)
				break
			}
		}
	}
	if m.FinalNorm {
		w.norm(RoleFinalNorm, -1, "model.norm")
	}
	if !m.TieEmbeddings {
		w.add(model(RoleHead), "lm_head.weight", d.V, d.D)
	}
	if m.HeadBias {
		h := model(RoleHead)
		h.Bias = true
		w.add(h, "lm_head.bias", d.V)
	}
}

// attention lists layer i's grouped-query attention (prefix p).
func (w *walker) attention(i int, p string) {
	d, a := w.d, w.m.Attention
	at := func(r Role) ID { return ID{Role: r, Layer: i, Expert: -1} }
	w.weightBias(at(RoleQ), p+"self_attn.q_proj", a.BiasQKV, d.QDim, d.D)
	owner := i-i%d.ShareKV == i
	if owner {
		w.weightBias(at(RoleK), p+"self_attn.k_proj", a.BiasQKV, d.KVDim, d.D)
		w.weightBias(at(RoleV), p+"self_attn.v_proj", a.BiasQKV, d.KVDim, d.D)
	}
	w.weightBias(at(RoleO), p+"self_attn.o_proj", a.BiasOut, d.D, d.QDim)
	if a.QKNorm {
		qw, kw := d.Dh, d.Dh
		if a.QKNormFull {
			qw, kw = d.QDim, d.KVDim
		}
		w.add(at(RoleQNorm), p+"self_attn.q_norm.weight", qw)
		if owner || a.QKNormAfterRope {
			w.add(at(RoleKNorm), p+"self_attn.k_norm.weight", kw)
		}
	}
	if a.Sinks {
		w.add(at(RoleSinks), p+"self_attn.sinks", d.H)
	}
	if a.TalkingHeads {
		w.add(at(RoleTalkingPre), p+"self_attn.talking_heads_pre.weight", d.H, d.H)
		w.add(at(RoleTalkingPost), p+"self_attn.talking_heads_post.weight", d.H, d.H)
	}
}

// latent lists layer i's multi-head latent attention (prefix p) as transformers'
// DeepseekV3Attention holds it: q_proj, or q_a_proj, q_a_layernorm and q_b_proj with a
// q_lora_rank; kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj; o_proj. attention_bias
// biases q_a_proj and kv_a_proj_with_mqa (q_proj, q_b_proj and kv_b_proj never have one),
// as compiler/analysis counts.
func (w *walker) latent(i int, p string) {
	d, a := w.d, w.m.Attention
	at := func(r Role) ID { return ID{Role: r, Layer: i, Expert: -1} }
	qk := int(a.QKNopeHeadDim + a.QKRopeHeadDim)
	if a.QLoraRank > 0 {
		w.weightBias(at(RoleQA), p+"self_attn.q_a_proj", a.BiasQKV, int(a.QLoraRank), d.D)
		w.add(at(RoleQANorm), p+"self_attn.q_a_layernorm.weight", int(a.QLoraRank))
		w.add(at(RoleQB), p+"self_attn.q_b_proj.weight", d.H*qk, int(a.QLoraRank))
	} else {
		w.add(at(RoleQ), p+"self_attn.q_proj.weight", d.H*qk, d.D)
	}
	w.weightBias(at(RoleKVA), p+"self_attn.kv_a_proj_with_mqa", a.BiasQKV, int(a.KVLoraRank+a.QKRopeHeadDim), d.D)
	w.add(at(RoleKVANorm), p+"self_attn.kv_a_layernorm.weight", int(a.KVLoraRank))
	w.add(at(RoleKVB), p+"self_attn.kv_b_proj.weight", d.H*int(a.QKNopeHeadDim+a.VHeadDim), int(a.KVLoraRank))
	w.weightBias(at(RoleO), p+"self_attn.o_proj", a.BiasOut, d.D, d.H*int(a.VHeadDim))
}

// Index maps each ID of ps to its position in ps.
func Index(ps []Param) map[ID]int {
	idx := make(map[ID]int, len(ps))
	for i, p := range ps {
		idx[p.ID] = i
	}
	return idx
}
