// Package weights makes a stage's starting weights without the hand-written model: a
// fresh initialisation, or growth from the previous stage's final checkpoint (dense →
// experts, experts → more experts), both keyed by the structured parameter identities of
// compiler/params.
//
// In: a resolved *program.Model, a seed, and for growth the previous stage's tensors and
// model. Out: tensors in the single-rank layout, named as checkpoints name them.
// runtime/nn initialises through Fill, runtime/train's engines start from Initial and
// Grow, and a step program written out as Go (codegen/gogen) calls them too, so every
// engine and the generated program start from the same bits.
package weights
