// Package train runs one stage of a training curriculum on the CPU.
//
// In: a checked program (package compiler/check), the train block and stage to run, and
// run options (steps, output directory, resume directory, seed, progress writer).
// Out: a run directory holding run.json (everything needed to resume without the source),
// log.jsonl (one JSON object per optimizer step: loss terms, gradient norm, learning rate,
// per-expert token counts, time), checkpoints/step-NNNNNNNN (package checkpoint) every
// checkpoint_every steps and at the end, and loss.png; and a Result with the validation
// perplexity.
//
// A stage `from` another starts from that stage's final checkpoint, growing the experts
// (see Grow). Each stage starts its own optimizer: zero AdamW moments (for old and new
// experts alike) and its own warmup + cosine schedule over its steps. A run killed at any point resumes from its newest complete checkpoint and
// continues bit-identically: batches are keyed by (seed, step, micro-batch), every random
// choice by (seed, step, layer, purpose), and the optimizer moments and step are restored.
//
// Eval computes the validation perplexity of a checkpoint.
package train
