// Package features is the table of model features × backends: for every feature a
// resolved model can use (talking heads, node-limited routing, a capacity factor, qk_norm,
// multi-token prediction, ...) it says what each backend moec lowers a model to does with
// it — honours it, approximates it (computes something close but not the same), refuses
// it, or computes nothing the feature changes.
//
// In: a resolved *program.Model (a stage's model, from program.StageModel) and, for the
// step program, the parallel Layout it is lowered under. Out: Table lists every row with
// its Uses predicate; Check returns the Gaps of one backend for one model — every feature
// the model uses that the backend refuses or approximates, naming both — which the
// backends turn into diagnostics (compiler/step's E0510, codegen's W9501) rather than
// dropping the feature silently; Markdown writes a model's rows as the table report.md
// shows.
//
// The cells are written from what each backend's code does, and tests in the backends
// hold them to it: runtime/nn.New refuses a model iff its runtime cell says Refused, the
// step program's E0510 follows its column, codegen reports the kernel columns' gaps, and
// the Megatron and Hugging Face exports' "not expressed" lists agree with theirs
// (featuretest builds the one-feature models those tests use). A cell may depend on the
// model (Megatron's sigmoid router renormalises only top-k > 1) and, for the step
// program, on the layout (talking heads under tensor parallelism).
package features
