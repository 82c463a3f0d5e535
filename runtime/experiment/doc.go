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
// per experiment and PNG plots (runtime/plot) of loss against tokens, wall-clock time and
// cumulative training FLOPs, and, when every arm varies one numeric key, a scaling table.
//
// Honesty rule: a difference between an arm and the baseline is called real only when the
// ranges [min, max] over seeds of the two arms do not overlap and each arm has at least
// two seeds; otherwise the report says the spread covers it. Results are what comes out.
package experiment
