// Package experiment runs the experiments a .moe file declares and reports them.
//
// In: the files of a checked program (parsed ASTs, so that an arm's overrides are written
// into its train and model and checked again exactly as if the user had written them),
// the experiments to run, an output directory and optional budget/seed overrides.
//
// Out: for every experiment, arm and seed one training run (runtime/train; an arm that ends
// at a stage grown `from` another runs the whole chain, each stage grown from the one
// before), then per arm the mean and spread over seeds of: final validation loss, step time,
// training FLOPs (compiler/analysis) and, for MoE models, routing stability per MoE layer
// (the fraction of a token's occurrences that go to its most frequent expert, measured on
// the validation windows with the final weights). Report writes results.md with one table
// per experiment, the share of the baseline's tokens and FLOPs each arm needed to reach the
// baseline's final training loss, PNG plots (runtime/plot) of loss against tokens,
// wall-clock time and cumulative training FLOPs, and, when every arm varies one numeric
// key, a scaling table that says where the gains stop being real.
//
// A variant's overrides apply on top of the baseline's. Arms run interleaved (every arm of
// seed 1, then seed 2, ...) so that a change in machine load falls on all arms alike. Run
// directories left by an earlier invocation with the same configuration are continued or
// reused (Options.Fresh retrains), so an interrupted experiment resumes.
//
// Honesty rule: a difference between an arm and the baseline is called real only when the
// ranges [min, max] over seeds of the two arms do not overlap and each arm has at least
// two seeds; otherwise the report says the spread covers it. Results are what comes out.
package experiment
