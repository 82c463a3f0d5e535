// Package exec runs step programs (compiler/step) on the CPU.
//
// In: one rank's *step.Program, the stage's *program.Model, and a Comm for the rank's
// collectives (nil for a single rank): the shared-memory World of in-process ranks (New),
// or a dist.Comm when each rank is its own process under mpirun (NewOver: the collectives
// as messages over one split communicator per axis group, the same numbers). Out: an
// Executor whose buffers are views of one arena per tier, placed where the program's memory plan says, so a step allocates
// nothing; Run executes the program's ops in order on a step's micro-batches and returns
// the loss terms as runtime/nn reports them.
//
// Inference programs run through Prefill and Decode (and DecodeAt); LocalDecoder runs a
// layout's inference programs on in-process ranks, a prefill sharing the decoding step's
// weights and KV caches (NewSharing).
//
// Each op kind has one kernel here (products through runtime/blas; activations and
// exponentials on AVX2 lanes where the build has cgo, else the same float32 formulas in
// Go; the expert kernels compute only the slots the router filled), exported with
// explicit arguments (Kernels and the functions of kernels_api.go's family: the buffers'
// views, the sizes, whether an output is added to, the expert buffers' fills): the
// executor reads each op's buffers and calls its kernel, and a step program written out
// as Go (codegen/gogen) calls the same kernels statement by statement. The kernels are
// written from the op definitions in compiler/step, not shared with runtime/nn: the
// hand-written model is the oracle the executor's losses and gradients are tested
// against (TestMatchesHandWrittenModel).
//
// Local runs a layout's training programs, one goroutine per rank (NewLocal) or this
// process's rank of an MPI world (NewRankOf): collectives, pipeline messages, the
// optimizer update (on the host tier when offloaded) and the unified cache's page moves
// between the host and device arenas (kernels_cache.go).
package exec
