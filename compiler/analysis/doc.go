// Package analysis counts a model exactly: parameters (total and active per token, by
// component and by layer) and FLOPs per token for a forward pass and a training step.
//
// In: a program.Model (compiler/program). Fields compiler/check leaves at zero get the
// language reference's defaults here too, so a model built directly in Go counts the same.
// Out: Counts (Count) and FLOPs (CountFLOPs), read by the report, the planner and the tests
// that hold moec's numbers against published figures (Mixtral-8x7B, DeepSeek-V3,
// Switch-C). The conventions behind each headline number are documented on Counts, FLOPs
// and Counts.Conventions; the short form: total and active include the embedding and the
// head (tied once), exclude MTP modules and non-trainable buffers (aux-free routing biases);
// FLOPs are 2 per active matmul weight plus attention at the mean causal context, and
// training is three forward passes.
package analysis
