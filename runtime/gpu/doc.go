// Package gpu runs a step program on an NVIDIA GPU through moec's generated CUDA: it writes
// the sources codegen/cudastep generates for one rank's program (the host program, the
// kernel library and the driver table's fillings) into a folder, compiles them with
// clang, loads the result and runs training steps (Session) or decodes with a KV cache
// (Decoder: a prefill and decoding steps over one arena), or runs continuous batching
// (Feeder: feeding programs, several sequences' prompt chunks and decoding tokens in one
// step, over one arena).
//
// Two modes. Device: the kernels become PTX for the GPU's architecture and the host
// program a shared library that opens libcuda.so.1 at run time, so a machine needs the
// NVIDIA driver and clang, never a CUDA SDK. Emulated: the kernels, the host program and a
// CPU stand-in for the driver API compile into one shared library under moec's CUDA
// emulation (codegen/cuda's emulation header), which runs the very same host program and
// kernels on the CPU: how the generated step is checked against runtime/exec without a GPU.
//
// Several ranks (Ranks, OpenRanks) run in one process, one session per rank (rank r on
// device r), joined in one NCCL communicator per group of ranks the programs communicate
// over, whose unique id the group's first rank creates; or one rank per process under
// mpirun (OpenRank: each process on the device of its node-local rank, the unique ids
// exchanged over the MPI world). Under the emulation the collectives meet in shared memory, threads and
// processes alike.
//
// What clang makes of sources that do not change between sessions (the emulated kernel
// library, the driver and NCCL stand-ins; each kernel file's PTX) is kept in a compile
// cache keyed by the SHA-256 of the compiler, its arguments and the input bytes
// (internal/compilecache: the user's cache folder, or MOEC_CUDA_CACHE: a folder, or
// "off"), so a second session compiles only its own host program.
//
// Parameters live in the device arena at the offsets of the program's memory plan, the
// same offsets runtime/exec's arena uses, so weights are copied buffer by buffer. Under
// the offloaded optimizer the plan's host tier (master weights, moments) lives in the host
// program's pinned host arena at its offsets there (UploadBuffer, DownloadBuffer); under
// the unified cache the whole host tier does, the weights included (LoadParams and Param
// move them there), and the device arena holds only the units the step fetched.
package gpu
