// Package megatron turns moec's plan for one curriculum stage into the launch arguments of
// Megatron-Core (Megatron-LM's pretrain_gpt.py), for users who train at scale on that
// engine.
//
// In: a checked program, a train block and one of its stages, and the plan moec chose for
// that stage (compiler/plan.ForStage). Out: a Launch: the arguments (model shape, MoE
// routing, parallel sizes, recompute, distributed optimizer, precision, optimizer and
// schedule, batch), the features moec trains that those arguments cannot express (listed,
// never dropped silently: token-embedding routing, attention-weight sharing, talking heads,
// AngelPTM's unified cache, expert growth between MoE stages, ...), and notes on what the
// user still supplies (data, tokenizer). Launch.Write prints it as a torchrun command.
//
// A flag is written only where Megatron builds the same weights and computes the same
// function: --qk-layernorm for per-head q/k norms in an RMSNorm model (Megatron's norm over
// head_dim) and for latent attention (where it switches on the latent norms), never for
// qk_norm = full; --moe-shared-expert-gate for shared_gate (Qwen2-MoE's sigmoid gate).
//
// Every flag written is one of Megatron-LM's documented arguments (megatron/training/
// arguments.py); the tests hold that list and fail on any other.
package megatron
