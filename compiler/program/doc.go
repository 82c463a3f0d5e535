// Package program holds the typed, fully resolved form of a .moe program: models,
// clusters, training curricula, serving and compression settings.
//
// In: nothing (package compiler/check builds a Program from syntax).
// Out: plain Go values that every later phase reads: counting (compiler/analysis),
// planning (compiler/plan), code generation and the runtime's model construction.
// No value here is a default the user cannot see: check records the provenance of each
// in Program.Explain.
package program
