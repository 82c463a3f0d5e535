package features

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// Cell constructors for cells that do not depend on the model.
func honoured() Cell {
	return func(*program.Model, Layout) Verdict { return Verdict{Status: Honoured} }
}
func refused(why string) Cell {
	return func(*program.Model, Layout) Verdict { return Verdict{Refused, why} }
}
func approximated(why string) Cell {
	return func(*program.Model, Layout) Verdict { return Verdict{Approximated, why} }
}
func outside(why string) Cell {
	return func(*program.Model, Layout) Verdict { return Verdict{Outside, why} }
}

// when is a cell that refuses with why where refuse(m, l) holds and honours otherwise.
func when(refuse func(m *program.Model, l Layout) bool, why string) Cell {
	return func(m *program.Model, l Layout) Verdict {
		if refuse(m, l) {
			return Verdict{Refused, why}
		}
		return Verdict{Status: Honoured}
	}
}

// moeOf is m's MoE block when it has routed experts, else nil.
func moeOf(m *program.Model) *program.MoE {
	if m.MoE == nil || m.MoE.Experts <= 0 {
		return nil
	}
	return m.MoE
}

func usesMoE(pred func(e *program.MoE) bool) func(m *program.Model) bool {
	return func(m *program.Model) bool {
		e := moeOf(m)
		return e != nil && pred(e)
	}
}

// expertActivation is the routed experts' activation (the FFN's when the block does not
// set one).
func expertActivation(m *program.Model) program.Activation {
	if e := moeOf(m); e != nil && e.Activation != "" {
		return e.Activation
	}
	return m.FFN.Activation
}

// kernelActivation is the activation the generated expert kernels compute: the experts',
// or for a dense stage the FFN's (the kernels then hold one expert of the FFN's width).
func kernelActivation(m *program.Model) program.Activation {
	if moeOf(m) == nil {
		return m.FFN.Activation
	}
	return expertActivation(m)
}

func usesActivation(a program.Activation) func(m *program.Model) bool {
	return func(m *program.Model) bool {
		if m.FFN.Activation == a {
			return true
		}
		return moeOf(m) != nil && expertActivation(m) == a
	}
}

// megatronBiasesMixed mirrors interop/megatron's bias switch: Megatron's launch
// arguments bias every linear layer, none, or Q/K/V alone.
func megatronBiasesMixed(m *program.Model) bool {
	a := m.Attention
	expertBias := m.MoE != nil && m.MoE.ExpertBias
	anyBias := a.BiasQKV || a.BiasOut || m.FFN.Bias || (m.MoE != nil && (m.MoE.ExpertBias || m.MoE.RouterBias))
	switch {
	case !anyBias:
		return false
	case a.BiasQKV && !a.BiasOut && !m.FFN.Bias && !expertBias:
		return false
	case a.BiasQKV && a.BiasOut && m.FFN.Bias && (m.MoE == nil || expertBias):
		return false
	}
	return true
}

const (
	megatronMixedBias = "biases on some linear layers but not others (Megatron biases all, none, or Q/K/V only)"
	kernelProjections = "the kernels compute no projections outside the experts and the router"
	kernelNoDense     = "the kernels compute the routed experts only; the MoE layer's other FFNs are not generated"
	kernelNoAuxLoss   = "router_bwd back-propagates the gates alone: no auxiliary-loss gradient is generated"
	goRunsRuntime     = "the generated program runs the CPU runtime: "
)

// The generated kernels' cells are the CUDA column's: codegen/cuda and codegen/llvm lower
// the same kernel descriptions (package kernels), so they honour the same features.
// `moec run --llvm` runs only the RMSNorm and cross-entropy kernels and computes the rest
// in Go, so for that command the runtime's column holds.

// besideAttention reports whether m's experts run beside attention (Arctic's
// moe.parallel_attention), whose norms the step program places as pre-norm only.
func besideAttention(m *program.Model, _ Layout) bool {
	return m.MoE != nil && m.MoE.ParallelAttention
}

// mlaUnlowered reports whether m combines latent attention with what neither runtime/nn
// nor the step program computes beside it.
func mlaUnlowered(m *program.Model, _ Layout) bool {
	a := m.Attention
	return a.QKNorm || a.TalkingHeads || a.Sinks || a.ShareKV > 1 || a.SharesWeights() || a.ClipQKV > 0 ||
		a.NopeEvery > 0 || a.ChunkSize > 0 || a.QKL2Norm || a.NopeTemperature > 0 ||
		(m.Position != program.Rotary && m.Position != program.NoPosition) || m.Norm == program.LayerNorm
}

// Table returns every row, in a fixed order (the report's). Each call builds it afresh:
// callers may not change the table others read.
func Table() []Feature {
	rows := []Feature{
		// Attention.
		{Key: "gqa", Name: "grouped-query attention (kv_heads < heads)",
			Uses: func(m *program.Model) bool {
				a := m.Attention
				return !a.MLA && a.KVHeads > 0 && a.KVHeads < a.Heads
			},
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(), HF: honoured(),
				CUDA: refused("rotary_fwd and rotary_bwd rotate heads × head_dim values per token; the kv_heads keys of grouped-query attention have no rotary kernel")}},
		{Key: "mla", Name: "multi-head latent attention (MLA)",
			Uses: func(m *program.Model) bool { return m.Attention.MLA || m.Attention.KVLoraRank > 0 },
			cells: map[Backend]Cell{
				Runtime:  when(mlaUnlowered, "nn.New computes latent attention (its norms are RMSNorms, as DeepSeek's) without qk_norm, talking heads, sinks, share_kv, share_weights, clip_qkv, Llama 4's attention, layernorm or other than rotary positions"),
				Step:     when(mlaUnlowered, "the step program lowers latent attention (training, under dp, ep, tp and pp) as runtime/nn computes it: without qk_norm, talking heads, sinks, share_kv, share_weights, clip_qkv, Llama 4's attention, layernorm or other than rotary positions"),
				CUDA:     refused("rotary_fwd rotates every head_dim feature; MLA rotates only its qk_rope_head_dim features"),
				Megatron: honoured(),
				HF:       unlessDeepSeek("DeepseekV3ForCausalLM holds latent attention beside routed experts with sigmoid scores and aux_free_bias: other models are exported in moec's layout"),
			}},
		{Key: "qk_norm", Name: "q/k norms (qk_norm)",
			Uses: func(m *program.Model) bool { return m.Attention.QKNorm },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA: refused("the RMSNorm kernels are d_model wide; no q/k norm kernel is generated"),
				Megatron: func(m *program.Model, _ Layout) Verdict {
					a := m.Attention
					switch {
					case a.MLA:
						return Verdict{Refused, "Megatron's MLA norms only the latents, not each head's queries and keys"}
					case a.QKNormFull:
						return Verdict{Refused, "qk_norm = full norms the whole projections; Megatron's --qk-layernorm norms each head over head_dim"}
					case m.Norm != program.RMSNorm:
						return Verdict{Refused, "moec's q/k norms are RMSNorm scales; Megatron's --qk-layernorm uses the --normalization kind, here LayerNorm with a bias"}
					}
					return Verdict{Status: Honoured}
				},
				HF: func(m *program.Model, _ Layout) Verdict {
					if moeOf(m) == nil && m.Attention.QKNormFull {
						return Verdict{Refused, "q/k norms over the whole projections in a dense model (Qwen3 norms per head): exported in moec's layout"}
					}
					return Verdict{Status: Honoured}
				},
			}},
		{Key: "qk_norm_after_rope", Name: "q/k norms after rotary positions (attention.qk_norm_after_rope)",
			Uses: func(m *program.Model) bool { return m.Attention.QKNorm && m.Attention.QKNormAfterRope },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     refused("the RMSNorm kernels are d_model wide; no q/k norm kernel is generated"),
				Megatron: refused("Megatron's --qk-layernorm norms the queries and keys before rotary positions"),
				HF: unlessHunyuan(
					"only the HunYuan classes (HunYuanMoEV1ForCausalLM, HunYuanForCausalLM) norm queries and keys after rotary positions, and they have an MoE in every layer with one ungated shared MLP: exported in moec's layout"),
			}},
		{Key: "clip_qkv", Name: "clipped Q/K/V projections (attention.clip_qkv)",
			Uses: func(m *program.Model) bool { return m.Attention.ClipQKV > 0 },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron does not clip the Q/K/V projections"),
				HF:       unlessDbrx("of the classes moec writes only OLMoE's (beside its whole-projection q/k norms) and DBRX's clip Q/K/V: other models are exported in moec's layout"),
			}},
		{Key: "talking_heads", Name: "talking heads (attention.talking_heads)",
			Uses: func(m *program.Model) bool { return m.Attention.TalkingHeads },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step: when(func(_ *program.Model, l Layout) bool { return l.tp() > 1 },
					"talking heads mix every head's scores, and tensor parallelism splits the heads over ranks"),
				CUDA:     refused("attn_softmax_fwd normalises each head's scores on their own; no head-mixing kernel is generated"),
				Megatron: refused("Megatron has no head-mixing matrices around the softmax"),
				HF:       refused("no transformers class has talking heads: exported in moec's layout"),
			}},
		{Key: "share_weights", Name: "attention-weight sharing (share_weights < 1)",
			Uses: func(m *program.Model) bool { s := m.Attention.ShareWeights; return s > 0 && s < 1 },
			// Under pp each stage sends its last layer's attention weights beside the
			// activations (compiler/step's share_pp.go; codegen/cudastep's pipeline.go
			// groups them with the activations).
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(),
				Megatron: refused("Megatron has no stochastic attention-weight sharing"),
				HF:       refused("no transformers class shares attention weights across layers: exported in moec's layout"),
			}},
		{Key: "share_kv", Name: "cross-layer K/V sharing (share_kv > 1)",
			Uses: func(m *program.Model) bool { return m.Attention.ShareKV > 1 },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step: func(m *program.Model, l Layout) Verdict {
					a := m.Attention
					switch {
					case a.SharesWeights():
						return Verdict{Refused, "with attention-weight sharing a layer that reuses the weights below still projects its group's keys"}
					case l.pp() > 1 && (m.Layers/l.pp())%a.ShareKV != 0:
						return Verdict{Refused, fmt.Sprintf("a pipeline stage of %d layers would start inside a group of %d layers sharing K/V", m.Layers/l.pp(), a.ShareKV)}
					}
					return Verdict{Status: Honoured}
				},
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron has no cross-layer K/V sharing"),
				HF:       unlessHunyuan("only Hunyuan-Large's HunYuanForCausalLM shares K/V across layers, with q/k norms after rotary positions, an MoE in every layer and one ungated shared MLP: exported in moec's layout"),
			}},
		{Key: "sinks", Name: "attention sinks (attention.sinks)",
			Uses: func(m *program.Model) bool { return m.Attention.Sinks },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     honoured(),
				CUDA:     refused("attn_softmax_fwd has no sink logit in its denominator"),
				Megatron: refused("Megatron has no learned attention sinks"),
				HF:       refused("no class moec writes has attention sinks: exported in moec's layout"),
			}},
		{Key: "window", Name: "sliding-window attention (attention.window)",
			Uses: func(m *program.Model) bool { return m.Attention.Window > 0 },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     honoured(),
				CUDA:     refused("attn_softmax_fwd is a full causal softmax: every earlier position is attended"),
				Megatron: refused("Megatron's launch arguments have no sliding window"),
				HF: when(func(m *program.Model, _ Layout) bool { return moeOf(m) == nil },
					"a sliding window in a dense model (only Mixtral, an MoE class, has one): exported in moec's layout"),
			}},
		{Key: "attention_bias", Name: "attention biases (qkv_bias, out_bias)",
			Uses: func(m *program.Model) bool { return m.Attention.BiasQKV || m.Attention.BiasOut },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: when(func(m *program.Model, _ Layout) bool { return megatronBiasesMixed(m) }, megatronMixedBias),
				HF: when(func(m *program.Model, _ Layout) bool {
					return moeOf(m) == nil && m.Attention.BiasQKV != m.Attention.BiasOut
				}, "a bias on Q/K/V but not on the output, or the reverse, in a dense model: exported in moec's layout"),
			}},

		// Positions and norms.
		{Key: "learned_positions", Name: "learned positions (position = learned)",
			Uses: func(m *program.Model) bool { return m.Position == program.Learned },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: outside("a position-table row added to the embedding; the rotary kernels are generated but go unused"),
				HF:   refused("the classes moec writes use rotary positions: exported in moec's layout"),
			}},
		{Key: "no_positions", Name: "no position encoding (position = none)",
			Uses: func(m *program.Model) bool { return m.Position == program.NoPosition },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: outside("the rotary kernels are generated but go unused"),
				HF:   refused("the classes moec writes use rotary positions: exported in moec's layout"),
			}},
		{Key: "relative_positions", Name: "relative position bias (position = relative)",
			Uses: func(m *program.Model) bool { return m.Position == program.Relative },
			cells: map[Backend]Cell{
				Runtime:  refused("nn.New refuses relative position bias"),
				Step:     refused("no lowering rule yet"),
				CUDA:     refused("no relative-bias kernel is generated; attn_softmax_fwd reads the scores as given"),
				Megatron: refused("Megatron's GPT model has rope, learned_absolute or no positions"),
				HF:       refused("the classes moec writes use rotary positions: exported in moec's layout"),
			}},
		{Key: "rope_scaling", Name: "rotary scaling (rope_scaling: linear, dynamic, yarn, llama3, longrope)",
			Uses: func(m *program.Model) bool { return m.Position == program.Rotary && m.RopeScaling != nil },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     refused("rotary_fwd rotates by the plain frequencies of rope_base"),
				Megatron: refused("Megatron's GPT model rotates by the plain frequencies (its yarn serves latent attention only)"),
				HF: when(func(m *program.Model, _ Layout) bool {
					rs := m.RopeScaling
					return rs.Type == program.RopeLongrope && !phimoeShaped(m) || rs.Type == program.RopeYarn && rs.OriginalSeqLen > 0 &&
						rs.OriginalSeqLen != m.SeqLen && float64(m.SeqLen)/float64(rs.OriginalSeqLen) != rs.Factor
				}, "longrope outside Phi-3.5-MoE, or yarn scaling whose rope_factor is not seq_len / rope_original_seq_len (transformers takes the factor from that ratio): exported in moec's layout"),
			}},
		{Key: "layernorm", Name: "LayerNorm (norm = layernorm)",
			Uses: func(m *program.Model) bool { return m.Norm == program.LayerNorm },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused("only RMSNorm kernels are generated"),
				HF: when(func(m *program.Model, _ Layout) bool { return !dbrxShaped(m) && !phimoeShaped(m) },
					"of the classes moec writes only DBRX's and Phi-3.5-MoE's use LayerNorm: other models are exported in moec's layout"),
			}},
		{Key: "norm_no_bias", Name: "LayerNorms without biases (norm_bias = false)",
			Uses: func(m *program.Model) bool { return m.Norm == program.LayerNorm && m.NormNoBias },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     refused("only RMSNorm kernels are generated"),
				Megatron: refused("Megatron's LayerNorm has biases"),
				HF:       unlessDbrx("of the classes moec writes only DBRX's has LayerNorms without biases: other models are exported in moec's layout"),
			}},
		{Key: "head_bias", Name: "an output-head bias (head_bias)",
			Uses: func(m *program.Model) bool { return m.HeadBias },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside("the embedding and the output head are not generated kernels"),
				Megatron: refused("Megatron's output layer has no bias"),
				HF:       unlessPhimoe("of the classes moec writes only Phi-3.5-MoE's has an lm_head bias: other models are exported in moec's layout"),
			}},
		{Key: "post_norm", Name: "post-norm (norm_placement = post)",
			Uses: func(m *program.Model) bool { return m.NormPlacement == program.PostNorm },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     when(besideAttention, "the experts beside attention (moe.parallel_attention) are lowered under pre-norm only"),
				CUDA:     outside("where the norms sit is the order the caller runs the kernels in"),
				Megatron: refused("Megatron's GPT layers are pre-norm"),
				HF:       refused("the classes moec writes are pre-norm: exported in moec's layout"),
			}},
		{Key: "sandwich_norm", Name: "sandwich norms (norm_placement = sandwich)",
			Uses: func(m *program.Model) bool { return m.NormPlacement == program.SandwichNorm },
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     when(besideAttention, "the experts beside attention (moe.parallel_attention) are lowered under pre-norm only"),
				CUDA:     outside("where the norms sit is the order the caller runs the kernels in"),
				Megatron: refused("Megatron's GPT layers are pre-norm"),
				HF:       refused("the classes moec writes are pre-norm: exported in moec's layout"),
			}},
		{Key: "no_final_norm", Name: "no final norm (final_norm = false)",
			Uses: func(m *program.Model) bool { return !m.FinalNorm },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     outside("whether a final norm runs is the caller's order of kernels"),
				Megatron: refused("Megatron's GPT model always has a final norm"),
				HF:       refused("the classes moec writes always have a final norm: exported in moec's layout"),
			}},

		// Model structure.
		{Key: "tied_embeddings", Name: "tied embeddings (tie_embeddings)",
			Uses: func(m *program.Model) bool { return m.TieEmbeddings },
			cells: map[Backend]Cell{Runtime: honoured(), Megatron: honoured(), HF: honoured(), Step: honoured(),
				CUDA: outside("the embedding and the output head are not generated kernels"),
			}},
		{Key: "mtp", Name: "multi-token prediction (mtp_depth)",
			Uses: func(m *program.Model) bool { return m.MTPDepth > 0 },
			cells: map[Backend]Cell{
				Runtime:  refused("nn.New refuses multi-token prediction"),
				Step:     refused("no lowering rule yet"),
				CUDA:     outside("the prediction modules are layers and a loss the caller assembles from the kernels"),
				Megatron: honoured(),
				HF:       refused("the classes moec writes have no prediction modules: exported in moec's layout"),
			}},
		{Key: "encoder_decoder", Name: "encoder-decoder models (encoder layers)",
			Uses: func(m *program.Model) bool { return m.Encoder > 0 },
			cells: map[Backend]Cell{
				Runtime:  refused("nn.New refuses encoder-decoder models"),
				Step:     refused("no lowering rule yet"),
				CUDA:     refused("attn_softmax_fwd is causal; the encoder's and the cross attention's unmasked softmax is not generated"),
				Megatron: refused("pretrain_gpt.py trains decoder-only models"),
				HF:       refused("the classes moec writes are decoder-only: exported in moec's layout"),
			}},
		{Key: "ffn_bias", Name: "FFN biases (ffn.bias)",
			Uses: func(m *program.Model) bool { return m.FFN.Bias },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     outside(kernelNoDense),
				Megatron: when(func(m *program.Model, _ Layout) bool { return megatronBiasesMixed(m) }, megatronMixedBias),
				HF: when(func(m *program.Model, _ Layout) bool { return moeOf(m) != nil },
					"the MoE classes have no FFN biases: exported in moec's layout"),
			}},

		// Activations.
		{Key: "relu", Name: "ReLU activation", Uses: usesActivation(program.ReLU), cells: activationCells(program.ReLU)},
		{Key: "gelu", Name: "GELU activation", Uses: usesActivation(program.GELU), cells: activationCells(program.GELU)},
		{Key: "silu", Name: "SiLU activation", Uses: usesActivation(program.SiLU), cells: activationCells(program.SiLU)},
		{Key: "swiglu", Name: "SwiGLU activation", Uses: usesActivation(program.SwiGLU), cells: activationCells(program.SwiGLU)},
		{Key: "geglu", Name: "GeGLU activation", Uses: usesActivation(program.GeGLU), cells: activationCells(program.GeGLU)},
		{Key: "expert_activation", Name: "experts with another activation than the dense FFN",
			Uses: func(m *program.Model) bool { return moeOf(m) != nil && expertActivation(m) != m.FFN.Activation },
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(),
				Megatron: refused("Megatron has one activation for the dense FFN and the experts"),
				HF:       refused("the classes moec writes have one activation: exported in moec's layout"),
			}},

		// Mixture of experts.
		{Key: "moe_layer_choice", Name: "MoE layers chosen by first_dense or moe.layers",
			Uses: usesMoE(func(e *program.MoE) bool { return e.FirstDense > 0 || len(e.Layers) > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: outside("which layers are MoE is the caller's order of kernels"),
				HF: when(func(m *program.Model, _ Layout) bool { return deepseekShaped(m) && len(moeOf(m).Layers) > 0 },
					"DeepseekV3ForCausalLM chooses its MoE layers by first_dense, not a list (the Qwen MoE classes list their dense layers): exported in moec's layout"),
			}},
		{Key: "token_routing", Name: "token-embedding routing (router = token_embedding)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.Router == program.RouteTokenEmbedding }),
			cells: map[Backend]Cell{Runtime: honoured(), CUDA: honoured(),
				// Under pp every stage with an MoE layer holds a copy of the table, their
				// gradients summed over the stages (compiler/step's router_table.go): one
				// bit of the layout per stage names the group.
				Step: when(func(_ *program.Model, l Layout) bool { return l.pp() > 64 },
					"the router table's group names at most 64 pipeline stages"),
				Megatron: refused("Megatron's router reads the hidden state, not a per-token table"),
				HF:       refused("the classes route on the hidden state: exported in moec's layout"),
			}},
		{Key: "sigmoid", Name: "sigmoid router scores (score = sigmoid)",
			Uses:  usesMoE(func(e *program.MoE) bool { return e.Score == program.Sigmoid }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(), Megatron: honoured(), HF: unlessDeepSeek("of the classes moec writes only DeepseekV3ForCausalLM routes with sigmoid scores: other models are exported in moec's layout")},
		},
		{Key: "normalize", Name: "renormalised top-k gates (normalize = true)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.Normalize }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(), HF: honoured(),
				Megatron: func(m *program.Model, _ Layout) Verdict {
					switch e := moeOf(m); {
					case e.TopK == 1 && e.Score == program.Softmax:
						return Verdict{Refused, "Megatron refuses top-1 softmax after the top-k; the launch uses --moe-router-pre-softmax, which gates by the softmax probability instead of 1"}
					case e.TopK == 1 && e.Score == program.Sigmoid:
						return Verdict{Refused, "Megatron keeps a top-1 sigmoid score instead of renormalising it to 1"}
					}
					return Verdict{Status: Honoured}
				},
			}},
		{Key: "unnormalized", Name: "top-k gates as scored (normalize = false)",
			Uses: usesMoE(func(e *program.MoE) bool { return !e.Normalize }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(), HF: honoured(),
				Megatron: when(func(m *program.Model, _ Layout) bool {
					e := moeOf(m)
					return e.Score == program.Sigmoid && e.TopK > 1
				}, "Megatron renormalises sigmoid top-k scores"),
			}},
		{Key: "router_bias", Name: "router bias (moe.router_bias)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.RouterBias }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(),
				Megatron: refused("Megatron's router has no bias"),
				HF:       refused("the classes' routers have no bias: exported in moec's layout"),
			}},
		{Key: "groups", Name: "node-limited routing (moe.groups, topk_groups)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.Groups > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     refused("router_fwd takes the top_k over all experts: the group limit is not generated"),
				Megatron: honoured(),
				HF:       unlessDeepSeek("of the classes moec writes only DeepseekV3ForCausalLM limits routing to groups: other models are exported in moec's layout"),
			}},
		{Key: "capacity_factor", Name: "a capacity factor (moe.capacity_factor)",
			Uses: usesMoE(func(e *program.MoE) bool { return !e.Dropless() }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA:     refused("route_index gives every assignment a slot: the kernels route dropless and drop nothing"),
				Megatron: approximated("Megatron drops the lowest-probability assignments (--moe-token-drop-policy probs); moec admits them rank-major in token order, so other tokens drop"),
				HF:       approximated("transformers drops no token at inference"),
			}},
		{Key: "dropless", Name: "dropless routing (no capacity factor)",
			Uses:  usesMoE(func(e *program.MoE) bool { return e.Dropless() }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), CUDA: honoured(), Megatron: honoured(), HF: honoured()},
		},
		{Key: "balance_loss", Name: "load-balance loss (moe.balance_loss)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.BalanceLoss > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused(kernelNoAuxLoss),
				HF:   outside("a training loss: the exported forward pass does not compute it"),
			}},
		{Key: "z_loss", Name: "router z-loss (moe.z_loss)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.ZLoss > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused(kernelNoAuxLoss),
				HF:   outside("a training loss: the exported forward pass does not compute it"),
			}},
		{Key: "aux_free_bias", Name: "auxiliary-loss-free bias balancing (moe.aux_free_bias)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.AuxFreeBias > 0 }),
			cells: map[Backend]Cell{
				Runtime: honoured(),
				Step:    honoured(),
				CUDA:    refused("router_fwd selects experts by score alone: no per-expert selection bias is generated"),
				Megatron: when(func(m *program.Model, _ Layout) bool { return moeOf(m).Score != program.Sigmoid },
					"Megatron's expert bias needs sigmoid scores"),
				HF: unlessDeepSeek("of the classes moec writes only DeepseekV3ForCausalLM has an expert selection bias, beside latent attention: other models are exported in moec's layout"),
			}},
		{Key: "expert_bias", Name: "expert biases (moe.expert_bias)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.ExpertBias }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(),
				CUDA: refused("the expert GEMMs (expert_up_fwd, expert_down_fwd) have no bias terms"),
				Megatron: func(m *program.Model, _ Layout) Verdict {
					if !m.FFN.Bias {
						return Verdict{Refused, "biases in the experts only (Megatron biases all linear layers, none, or Q/K/V only)"}
					}
					if megatronBiasesMixed(m) {
						return Verdict{Refused, megatronMixedBias}
					}
					return Verdict{Status: Honoured}
				},
				HF: refused("the MoE classes have no FFN biases: exported in moec's layout"),
			}},
		{Key: "shared_experts", Name: "shared experts (moe.shared_experts)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.SharedExperts > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused(kernelNoDense),
				HF: func(m *program.Model, _ Layout) Verdict {
					switch e := moeOf(m); {
					case deepseekShaped(m) && !e.SharedGate && (e.SharedHidden == 0 || e.SharedHidden == e.ExpertHidden):
						// DeepseekV3ForCausalLM: one MLP of n_shared_experts · moe_intermediate_size.
					case hunyuanShaped(m):
						// The HunYuan classes: one ungated shared_mlp.
					case deepseekMoEShaped(m):
						// DeepseekForCausalLM (DeepSeek-MoE): one MLP of n_shared_experts · moe_intermediate_size.
					case e.SharedExperts > 1:
						return Verdict{Refused, fmt.Sprintf("%d shared experts (Qwen2-MoE, the one class with a shared expert, has one): exported in moec's layout", e.SharedExperts)}
					case !e.SharedGate:
						return Verdict{Refused, "an ungated shared expert (Qwen2-MoE gates its shared expert: shared_gate = true): exported in moec's layout"}
					}
					return Verdict{Status: Honoured}
				},
			}},
		{Key: "shared_gate", Name: "shared expert gate (moe.shared_gate)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.SharedGate && e.SharedExperts > 0 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused(kernelNoDense),
				HF: when(func(m *program.Model, _ Layout) bool { return moeOf(m).SharedExperts > 1 },
					"Qwen2-MoE gates one shared expert, not several: exported in moec's layout"),
			}},
		{Key: "routed_scale", Name: "scaled routed experts (moe.routed_scale)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.RoutedScaleOrOne() != 1 }),
			cells: map[Backend]Cell{Runtime: honoured(), Step: honoured(), Megatron: honoured(),
				CUDA: refused("the combine kernel weights each expert by its gate alone"),
				HF:   unlessDeepSeek("of the classes moec writes only DeepseekV3ForCausalLM scales its routed experts: other models are exported in moec's layout"),
			}},
		{Key: "sparsemixer", Name: "sparsemixer routing (moe.sparsemixer_eps)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.SparsemixerEps > 0 }),
			cells: map[Backend]Cell{
				Runtime:  unlessPhiRouting(),
				Step:     unlessPhiRouting(),
				CUDA:     refused("router_fwd takes a top-k softmax"),
				Megatron: refused("Megatron routes by top-k"),
				HF:       unlessPhimoe("of the classes moec writes only Phi-3.5-MoE's routes by sparsemixer: other models are exported in moec's layout"),
			}},
		{Key: "parallel_dense", Name: "a dense FFN beside the experts (moe.parallel_dense)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.ParallelDense }),
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     honoured(),
				CUDA:     refused(kernelNoDense),
				Megatron: refused("Megatron has no dense FFN in parallel with the experts"),
				// Arctic's residual MLP is the one such FFN a class moec writes holds.
				HF: when(func(m *program.Model, _ Layout) bool { return !m.MoE.ParallelAttention },
					"no class moec writes has a dense FFN beside its experts: exported in moec's layout"),
			}},
		{Key: "nope_every", Name: "layers without rotary positions (attention.nope_every)",
			Uses: func(m *program.Model) bool { return m.Attention.NopeEvery > 0 },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron rotates every layer alike"),
				HF:       refused("the classes moec writes rotate every layer: exported in moec's layout"),
			}},
		{Key: "chunked_attention", Name: "chunked attention (attention.chunk)",
			Uses: func(m *program.Model) bool { return m.Attention.ChunkSize > 0 },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron has no chunked attention"),
				HF:       refused("the classes moec writes attend to the whole causal prefix: exported in moec's layout"),
			}},
		{Key: "qk_l2_norm", Name: "unscaled q/k norms after rotary positions (attention.qk_l2_norm)",
			Uses: func(m *program.Model) bool { return m.Attention.QKL2Norm },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron's --qk-layernorm has scales and norms before rotary positions"),
				HF:       refused("the classes moec writes have no unscaled q/k norms: exported in moec's layout"),
			}},
		{Key: "nope_temperature", Name: "query temperature without rotary positions (attention.nope_temperature)",
			Uses: func(m *program.Model) bool { return m.Attention.NopeTemperature > 0 },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron does not scale queries by position"),
				HF:       refused("the classes moec writes do not scale queries by position: exported in moec's layout"),
			}},
		{Key: "full_every", Name: "sliding windows in some layers only (attention.full_every)",
			Uses: func(m *program.Model) bool { return m.Attention.FullEvery > 0 && m.Attention.Window > 0 },
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     outside(kernelProjections),
				Megatron: refused("Megatron's window applies to every layer"),
				HF:       refused("the classes moec writes window every layer alike: exported in moec's layout"),
			}},
		{Key: "swiglu_limit", Name: "gpt-oss's clamped SwiGLU experts (moe.swiglu_limit)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.SwigluLimit > 0 }),
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     refused("the expert kernels compute the plain SwiGLU"),
				Megatron: refused("Megatron's --swiglu is not clamped"),
				HF:       refused("the classes moec writes compute the plain SwiGLU: exported in moec's layout"),
			}},
		{Key: "gate_input", Name: "gates on the experts' inputs (moe.gate_input)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.GateInput }),
			cells: map[Backend]Cell{
				Runtime:  honoured(),
				Step:     honoured(),
				CUDA:     refused("expert kernels scale the experts' outputs by their gates"),
				Megatron: refused("Megatron scales the experts' outputs by their gates"),
				HF:       refused("the classes moec writes scale the experts' outputs: exported in moec's layout"),
			}},
		{Key: "parallel_attention", Name: "experts beside attention, the dense FFN after it (moe.parallel_attention)",
			Uses: usesMoE(func(e *program.MoE) bool { return e.ParallelAttention }),
			cells: map[Backend]Cell{Runtime: honoured(),
				Step:     honoured(),
				CUDA:     refused(kernelNoDense),
				Megatron: refused("Megatron's experts read the post-attention stream"),
				HF:       honoured(),
			}},
	}
	for i := range rows {
		// The LLVM kernels are the same kernel descriptions lowered to LLVM IR; the Go
		// program is the CPU runtime with the schedule unrolled.
		rows[i].cells[LLVM] = rows[i].cells[CUDA]
		rows[i].cells[CUDAStep] = cudaStepCell(rows[i].Key, rows[i].cells[Step])
		runtime := rows[i].cells[Runtime]
		rows[i].cells[GoProg] = func(m *program.Model, l Layout) Verdict {
			v := runtime(m, l)
			if v.Reason != "" {
				v.Reason = goRunsRuntime + v.Reason
			}
			return v
		}
	}
	return rows
}

// cudaStepRefusal says why the CUDA step backend (codegen/cudastep) cannot run the
// feature of row key although the step program lowers it: it has no kernel for the
// feature's ops, or its kernels do not compute the feature's variant of an op (its
// unhonoured). TestCUDAStepColumnAgreesWithLower lowers each feature's example through
// cudastep and holds this list to what it refuses.
func cudaStepRefusal(key string) string {
	switch key {
	case "qk_norm", "qk_norm_after_rope":
		return "no CUDA kernel for the q/k norms yet"
	case "clip_qkv":
		return "no CUDA kernel for clipping Q/K/V yet"
	case "qk_l2_norm":
		return "no CUDA kernel for the q/k L2 norms yet"
	case "nope_temperature":
		return "no CUDA kernel for the query temperature yet"
	case "sinks":
		return "the attention softmax kernels have no sink logit"
	case "window", "full_every", "chunked_attention":
		return "the attention softmax kernels mask causally only"
	case "shared_gate":
		return "no CUDA kernel for the shared expert's sigmoid gate yet"
	case "sparsemixer":
		return "the routing kernels take a top-k of the scores, not sparsemixer's"
	case "swiglu_limit":
		return "the activation kernels compute the plain SwiGLU"
	case "gate_input":
		return "the permute and combine kernels gate the experts' outputs, not their inputs"
	}
	return ""
}

// cudaStepInferenceLowers reports whether cudaStepRefusal(key) is training's alone: the
// inference programs (the prefill and decoding steps `moec generate --device` runs, the
// feeding programs of `moec serve --device`) lower the feature.
// TestCUDAStepColumnAgreesWithDecoding holds this list to what cudastep.LowerDecoding and
// LowerServing refuse.
// No refusal is training's alone at present: latent attention, the last, trains on CUDA
// too (codegen/cudastep's mla_train.go).
func cudaStepInferenceLowers(string) bool {
	return false
}

// CUDAStepTrainingOnly begins the reason of a CUDA step cell that refuses training alone.
const CUDAStepTrainingOnly = "inference (generate, serve --device) lowered; training refused: "

// cudaStepCell is the CUDA step's cell of the row key: it lowers the step program op by
// op, so it refuses what the step program refuses and what cudaStepRefusal names, and
// honours the rest. The column covers training and inference (`moec run`, `generate` and
// `serve --device`); a refusal of training alone says so (CUDAStepTrainingOnly).
func cudaStepCell(key string, step Cell) Cell {
	return func(m *program.Model, l Layout) Verdict {
		if v := step(m, l); v.Status == Refused {
			return Verdict{Refused, "the step program does not lower it"}
		}
		why := cudaStepRefusal(key)
		switch {
		case why == "":
			return Verdict{Status: Honoured}
		case cudaStepInferenceLowers(key):
			return Verdict{Refused, CUDAStepTrainingOnly + why}
		}
		return Verdict{Refused, why}
	}
}

// activationCells are the cells of one activation's row.
func activationCells(a program.Activation) map[Backend]Cell {
	cells := map[Backend]Cell{Runtime: honoured(), Step: honoured()}
	cells[CUDA] = func(m *program.Model, _ Layout) Verdict {
		switch {
		case kernelActivation(m) != a:
			return Verdict{Outside, kernelNoDense}
		case a == program.GELU || a == program.GeGLU:
			return Verdict{Approximated, "the expert kernels compute GELU with the tanh approximation; moec's model (and the CPU runtime) use the exact erf form"}
		}
		return Verdict{Status: Honoured}
	}
	switch a {
	case program.GELU, program.SwiGLU:
		cells[Megatron] = honoured()
	default:
		cells[Megatron] = when(func(m *program.Model, _ Layout) bool { return m.FFN.Activation == a },
			fmt.Sprintf("Megatron's launch arguments give GELU or --swiglu, not %s", a))
	}
	if a.Gated() {
		cells[HF] = honoured()
	} else {
		cells[HF] = when(func(m *program.Model, _ Layout) bool { return m.FFN.Activation == a },
			fmt.Sprintf("the classes gate their FFNs (swiglu or geglu), not %s: exported in moec's layout", a))
	}
	return cells
}
