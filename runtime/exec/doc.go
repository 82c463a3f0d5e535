// Package exec runs step programs (compiler/step) on the CPU.
//
// In: one rank's *step.Program, the stage's *program.Model, and a Comm for the rank's
// collectives (nil for a single rank). Out: an Executor whose buffers are views of one
// arena per tier, placed where the program's memory plan says, so a step allocates
// nothing; Run executes the program's ops in order on a step's micro-batches and returns
// the loss terms as runtime/nn reports them.
//
// Each op kind has one kernel here (products through runtime/blas), exported with explicit
// arguments (Kernels and the functions of kernels_api.go's family: the buffers' views, the
// sizes, whether an output is added to): the executor reads each op's buffers and calls
// its kernel, and a step program written out as Go (codegen/gogen) calls the same kernels
// statement by statement. The kernels are written from the op definitions in
// compiler/step, not shared with runtime/nn: the hand-written model is the oracle the
// executor's losses and gradients are tested against (TestMatchesHandWrittenModel).
//
// Not executed yet: collectives and pipeline messages (a program of more than one rank),
// the vocabulary-parallel cross-entropy, and the update ops (the optimizer).
package exec
