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
// user still supplies and where Megatron's published recipes differ from the file's model.
// Launch.Write prints it as one torchrun command for every node, which starts exactly the
// plan's world size (the last node runs fewer ranks when it is not a whole number of
// nodes), sets CUDA_DEVICE_MAX_CONNECTIONS=1 where tensor parallelism needs it, and reads
// what only the user knows (node rank, rendezvous address, data, tokenizer, checkpoint
// directories) from environment variables it stops without.
//
// A flag is written only where Megatron builds the same weights and computes the same
// function: --qk-layernorm for per-head q/k norms in an RMSNorm model (Megatron's norm over
// head_dim) and for latent attention (where it switches on the latent norms), never for
// qk_norm = full; --moe-shared-expert-gate for shared_gate (Qwen2-MoE's sigmoid gate).
//
// Every flag written is one of Megatron-LM's arguments (megatron/training/arguments.py; the
// tests hold its parser's table), and the tests start every shipped stage's command under
// bash and put what torchrun and pretrain_gpt.py receive through the checks Megatron applies
// before training (megatron_check_test.go).
package megatron
