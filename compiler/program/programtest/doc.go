// Package programtest builds the models tests run on through moec's one resolution: a
// model block written in the .moe language and checked (compiler/check), so every default
// is the checker's, never a test's own copy of it.
//
// In: the body of a model block (Model), or one of the shared small models with edits
// (Tiny, TinyMoE, HunyuanTiny). Out: the resolved *program.Model. A model that does not
// check fails the test with the checker's diagnostics.
package programtest
