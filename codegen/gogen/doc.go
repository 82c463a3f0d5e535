// Package gogen writes the generated Go program of one training stage.
//
// In: a Config (ConfigFor resolves it from a checked program, a train block and a stage,
// as `moec run` does). Out: MainSource returns main.go, a Go main package written with
// jennifer: typed parameter structs bound by name to the runtime's model, the forward and
// backward schedule of a micro-batch unrolled layer by layer into calls to
// nn.Schedule, and a main that trains the stage with runtime/data and runtime/optim
// (the same batches, optimizer and seeds as runtime/train, so the same losses) and then
// generates text. With -llvm LIBRARY (the stage's llvm/libmoe_kernels.so) the program
// runs the compiled LLVM kernels through runtime/kernelsel in place of the Go ones for the
// norms, the cross-entropy and AdamW. Emit writes outDir/go/{main.go, go.mod, go.sum}.
//
// With a step program (Options.Step, rank 0's), Emit also writes go/step/main.go
// (StepSource): the step program itself as Go, one statement per op in program order (a
// call of runtime/exec's kernels on typed views of the planned arena, a collective between
// the ranks, runtime/optim's AdamW per parameter group) for every rank of its layout
// (data, expert, tensor and pipeline parallelism, sequence parallelism, full and selective
// recompute, ZeRO 1–3, an offloaded optimizer, the unified cache's fetches and
// write-backs; the expert kernels skip the empty slots as the executor's do),
// starting from runtime/weights' initialisation or growth. It
// imports neither runtime/nn nor runtime/train, and prints the losses `moec run
// --step-programs` logs (TestStepProgramMatchesRun).
//
// How it builds: go/ is its own module (module moecgen/<name>) that requires moec and
// replaces it with the local checkout, as a relative path when the output lies inside
// one (`moec build` run from a clone writes out/<file>/<stage>/go with
// `replace github.com/moec-dev/moec => ../../../..`), and carries moec's go.sum. So
// `cd out/<file>/<stage>/go && go build` works from a fresh clone, and the generated
// programs never join a `go build ./...` of the moec tree.
//
// Names from the .moe file reach the program only sanitised (codegen.Ident in
// identifiers, comments and messages); the data globs are Go-quoted string literals.
// Identifiers of the parameter structs come from the runtime's fixed parameter names.
// The output is deterministic byte for byte.
package gogen
