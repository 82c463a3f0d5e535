// Package hf converts between Hugging Face transformers checkpoints and moec.
//
// Import: a Hugging Face config.json of a Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3,
// OLMoE or dense Llama-style model goes in; out comes canonical .moe source (printed by
// lang/format, checked by compiler/check before it is returned) whose model has exactly the
// checkpoint's parameters, with a header comment naming the source architecture. Both
// transformers v4 (rope_scaling, rope_theta, torch_dtype) and v5 (rope_parameters, dtype)
// configs are read; rotary scaling and routed_scaling_factor become the model's rope_* and
// moe.routed_scale keys. A config field moec cannot express is never dropped silently:
// ImportConfig returns an *Error that lists every such field. Only a field whose absence
// leaves the numbers the same (dropout, router jitter, pretraining_tp) may be named in
// Options.Drop, and each dropped field is then written into the header comment; any other
// (an activation, a quantization other than gpt-oss's MXFP4 and fine-grained FP8, an unknown
// field) is refused with the reason, and so is a --drop naming a field moec imports.
//
// Weights: ImportCheckpoint reads a Hugging Face folder (config.json and *.safetensors,
// sharded or not, F32/BF16/F16, or DeepSeek-V3's fine-grained FP8: E4M3 weights
// dequantised to float32 with their block scales, fp8.go) of a Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE,
// OLMoE, Qwen2-MoE, Snowflake Arctic, gpt-oss (its MXFP4 experts decoded to float32
// exactly), Llama 4, DeepSeek-MoE, DeepSeek-V2/V3, Hunyuan-A13B, Hunyuan-Large, DBRX or Phi-3.5-MoE model and writes a moec checkpoint (runtime/checkpoint) whose tensors
// carry moec's names. Export reads a moec checkpoint and writes config.json plus
// safetensors (fp32, or bf16/fp16 through ExportWith; past 5 GB in numbered files with
// model.safetensors.index.json) in the layout the matching transformers class loads
// (MixtralForCausalLM for a Mixtral-shaped model, Qwen3MoeForCausalLM for one with per-head
// q/k norms, OlmoeForCausalLM for one with q/k norms over the whole projections (qk_norm =
// full), Qwen2MoeForCausalLM for one with Q/K/V biases and one gated shared expert,
// ArcticForCausalLM, Snowflake's remote code, for one with its experts beside attention
// (moe.parallel_attention), HunYuanMoEV1ForCausalLM or HunYuanForCausalLM, Tencent's
// remote code, for one with q/k norms after rotary positions (hunyuan_weights.go),
// (moe.parallel_attention), DbrxForCausalLM for one with LayerNorms without biases
// (dbrx_weights.go), PhimoeForCausalLM for one routed by sparsemixer (phimoe_weights.go),
// DeepseekForCausalLM, deepseek-ai's remote code, for one with ungated shared experts (or
// none, where no class above holds it: a plain greedy top-k) beside
// standard attention (deepseek_moe.go),
// LlamaForCausalLM or Qwen3ForCausalLM for a dense one). A model
// using features none of these classes has (token-embedding routing, attention-weight sharing, talking heads, ...)
// is exported in the moec layout instead, with the reasons returned and written down.
// Every export writes export_manifest.json: each tensor's source and destination name,
// shape and SHA-256, and for each MoE layer the one tensor set each expert went to, so a
// reader can prove every expert tensor is carried exactly once.
//
// Tensor data is copied bit for bit: an import → export → import round trip returns the
// same float32 values. Half-precision safetensors are widened to float32 on import (exact).
package hf
