// Package analysis counts a model exactly: parameters (total and active per token, by
// component and by layer) and FLOPs per token for a forward pass and a training step.
//
// In: a program.Model (compiler/program).
// Out: Counts and FLOPs, read by the report, the planner and the tests that hold moec's
// numbers against published figures.
package analysis
