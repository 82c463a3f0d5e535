package nn

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// ParamInfo names one trainable tensor and its shape, without its values.
type ParamInfo struct {
	Name  string
	Shape []int
}

// Layout lists the parameters New would create for m, in the same order and with the
// same names and shapes as Model.Params, without allocating them: code generators need
// the layout of models far too large to instantiate (a trillion-parameter stage).
// TestLayoutMatchesNew holds it to New on models that take every naming branch.
func Layout(m *program.Model) ([]ParamInfo, error) {
	if m == nil {
		return nil, fmt.Errorf("nn: nil model")
	}
	if err := checkSupported(m); err != nil {
		return nil, err
	}
	d, err := resolveDims(m)
	if err != nil {
		return nil, err
	}
	var out []ParamInfo
	add := func(name string, shape ...int) { out = append(out, ParamInfo{Name: name, Shape: shape}) }
	ln := m.Norm == program.LayerNorm
	norm := func(name string) {
		add(name+".weight", d.D)
		if ln {
			add(name+".bias", d.D)
		}
	}
	weightBias := func(name string, bias bool, rows, cols int) {
		add(name+".weight", rows, cols)
		if bias {
			add(name+".bias", rows)
		}
	}
	ffn := func(prefix string, act program.Activation, hidden int, bias bool, gate, up, down, plain string) {
		if act.Gated() {
			weightBias(prefix+gate, bias, hidden, d.D)
			weightBias(prefix+up, bias, hidden, d.D)
		} else {
			weightBias(prefix+plain, bias, hidden, d.D)
		}
		weightBias(prefix+down, bias, d.D, hidden)
	}
	add("model.embed_tokens.weight", d.V, d.D)
	if d.MaxPos > 0 {
		add("model.embed_positions.weight", d.MaxPos, d.D)
	}
	a := m.Attention
	for i := 0; i < d.L; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		if placement(m) != program.PostNorm {
			norm(p + "input_layernorm")
		}
		weightBias(p+"self_attn.q_proj", a.BiasQKV, d.qDim, d.D)
		owner := i-i%d.ShareKV == i
		if owner {
			weightBias(p+"self_attn.k_proj", a.BiasQKV, d.kvDim, d.D)
			weightBias(p+"self_attn.v_proj", a.BiasQKV, d.kvDim, d.D)
		}
		weightBias(p+"self_attn.o_proj", a.BiasOut, d.D, d.qDim)
		if a.QKNorm {
			qw, kw := qkNormWidths(m, d)
			add(p+"self_attn.q_norm.weight", qw)
			if owner {
				add(p+"self_attn.k_norm.weight", kw)
			}
		}
		if a.Sinks {
			add(p+"self_attn.sinks", d.H)
		}
		if a.TalkingHeads {
			add(p+"self_attn.talking_heads_pre.weight", d.H, d.H)
			add(p+"self_attn.talking_heads_post.weight", d.H, d.H)
		}
		switch placement(m) {
		case program.PreNorm:
			norm(p + "post_attention_layernorm")
		case program.SandwichNorm:
			norm(p + "post_attention_layernorm")
			norm(p + "pre_feedforward_layernorm")
		case program.PostNorm:
			norm(p + "post_attention_layernorm")
		}
		moeLayer := m.IsMoELayer(i)
		if !moeLayer || m.MoE.ParallelDense {
			ffn(p+"mlp.", m.FFN.Activation, d.Hidden, m.FFN.Bias, "gate_proj", "up_proj", "down_proj", "up_proj")
		}
		if moeLayer {
			mp := p + "block_sparse_moe."
			weightBias(mp+"gate", m.MoE.RouterBias, d.E, d.RouterIn)
			gated := expertActivation(m).Gated()
			bias := m.MoE.ExpertBias
			for e := 0; e < d.E; e++ {
				ep := fmt.Sprintf("%sexperts.%d.", mp, e)
				weightBias(ep+"w1", bias, d.EHidden, d.D)
				weightBias(ep+"w2", bias, d.D, d.EHidden)
				if gated {
					weightBias(ep+"w3", bias, d.EHidden, d.D)
				}
			}
			for s := 0; s < d.Shared; s++ {
				ffn(fmt.Sprintf("%sshared_experts.%d.", mp, s), expertActivation(m), d.SHidden, bias, "w1", "w3", "w2", "w1")
			}
			if hasSharedGate(m) {
				add(mp+sharedGateName, 1, d.D)
			}
		}
		if placement(m) != program.PreNorm {
			norm(p + "post_feedforward_layernorm")
		}
	}
	if m.MoE != nil && m.MoE.Router == program.RouteTokenEmbedding {
		// The model's one router table (see core.routerEmbed), after the layers.
		for i := 0; i < d.L; i++ {
			if m.IsMoELayer(i) {
				add("model.router_embed.weight", d.V, d.RouterIn)
				break
			}
		}
	}
	if m.FinalNorm {
		norm("model.norm")
	}
	if !m.TieEmbeddings {
		add("lm_head.weight", d.V, d.D)
	}
	return out, nil
}
