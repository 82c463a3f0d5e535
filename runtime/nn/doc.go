// Package nn is the runtime's model math: the forward and backward pass of a decoder-only
// (Mixture-of-Experts) transformer described by a program.Model, on the CPU.
//
// In: a resolved *program.Model, a seed, and batches of token ids.
// Out: a Model whose Params (named as Hugging Face Llama/Mixtral checkpoints name them) hold
// weights and accumulated gradients; ForwardBackward returns the loss terms and routing
// statistics of a training step; Logits and Decoder serve evaluation and generation.
//
// The kernels are written once, generically over float32 and float64. The public Model is
// the float32 instantiation; the tests instantiate the same code in float64 for
// finite-difference gradient checks, so what is checked is exactly what trains. Matrix
// products go through runtime/blas.
//
// Computed: token embedding (rows padded to vocab_pad_to; the padded logits take part in
// the softmax as in Hugging Face models); learned or rotary positions (rotate-half layout);
// RMSNorm or LayerNorm, placed pre, post or sandwich (Gemma 2 names); causal attention with GQA/MQA, optional sliding
// window, Q/K/V/output biases, qk_norm (scale-only RMSNorm whatever the model's norm: per
// head over head_dim, shared by all heads, or with qk_norm = full over the whole query and
// key projections, as OLMoE), learned sinks, talking
// heads (mixing before and after the softmax) and cross-layer attention (share_kv: the
// first layer of each group projects keys and values for the group; the others have no
// k_proj/v_proj); stochastic attention-weight sharing; dense
// FFNs and experts with ReLU, GELU (erf), SiLU, SwiGLU or GeGLU, with optional biases; the
// MoE layer described below; a tied or untied head; mean cross-entropy.
//
// The MoE layer: the router reads the normalised hidden state, or with router =
// token_embedding its own [vocab, router_dim] table by token id. Scores are the softmax or
// sigmoid of the router logits; each token takes its top_k experts (ties to the lower
// index), gates are the chosen scores, renormalised to sum to one when normalize is set.
// With a capacity factor, capacity = ceil(cf·tokens·top_k/experts) per expert and
// assignments are admitted rank-major (every token's first choice before any second
// choice), in token order; a dropped assignment contributes nothing, so a token dropped by
// all its experts passes through the residual. Shared experts see every token; with
// parallel_dense the layer's dense FFN runs beside the experts. Balance loss (Switch):
// E·Σ_e f_e·P_e with f_e the fraction of assignments (before capacity) routed to e and P_e
// the mean score of e. Z-loss: mean over tokens of logsumexp(router logits)².
//
// Stochastic attention-weight sharing: in each step and layer l > 0 a die from
// rng.Key(seed, step, l, rng.PurposeAttnShare) recomputes the attention weights with
// probability share_weights; otherwise layer l applies the weights of the layer below
// (after talking-heads mixing) to its own values and skips its Q/K projections. The dice
// roll in training (StepOptions.Train) and when StepOptions.AttnShare asks for it; the
// Decoder always recomputes. In the backward pass the gradient of reused weights flows to
// the layer that computed them.
//
// With groups (node-limited routing, as DeepSeek-V2) a group scores its best expert and a
// token chooses among the experts of its top_k_groups best groups. With aux_free_bias
// (DeepSeek-V3's noaux_tc, routing_bias.go) the choice is made on the scores plus a
// per-expert selection bias (e_score_correction_bias; a group then scores the sum of its two
// best), the gates stay the unbiased scores, and UpdateRouterBias moves the bias after each
// training step by aux_free_bias·sign(mean load − load); it is listed with the parameters
// but takes no gradient.
//
// Multi-head latent attention (DeepSeek-V2/V3, mla.go) computes as transformers'
// DeepseekV3Attention, its rope features in the rotate-half layout; the Decoder caches the
// normalised latent and the rotated shared key per position and attends with kv_b_proj
// absorbed (mla_decode.go).
//
// Not computed, refused by New with *UnsupportedError: encoder-decoder models, relative
// position bias, multi-token prediction, MLA with q/k norms, talking heads, sinks, share_kv,
// share_weights, LayerNorms or Llama 4's attention.
//
// Everything random (initialisation, the sharing dice) comes from runtime/rng. A Model
// keeps the activation buffers of the last (B, T) it ran, so steps of one shape allocate
// almost nothing; it is not safe for concurrent use.
package nn
