// Package cudastep lowers a step program (compiler/step) to CUDA: every op of a rank's
// program becomes one or more kernel launches of moec's step kernel library, and the host
// side is generated too.
//
// In: one rank's *step.Program and its stage's resolved *program.Model. Out: the host
// program (C++: the step's launches in program order over one device arena laid out by
// the program's memory plan, through a table of CUDA driver API entry points), the kernel
// library's CUDA source, and the table of its kernels' signatures (Kernel), from which the
// CPU emulation's launch trampolines are written.
//
// The host program calls the driver through a function table: on a machine with an NVIDIA
// driver the table is filled from libcuda.so.1 opened at run time (no CUDA SDK at build or
// run time; the kernels are PTX compiled by clang), and in tests it is filled with CPU
// stand-ins that run the same CUDA source compiled as C++ under moec's emulation header
// (codegen/cuda's EmulationHeader), which is how the generated step is checked against
// the CPU executor (runtime/exec) on machines without a GPU.
//
// A program of several ranks calls NCCL through a second table (moec_step_nccl.h), filled
// from libnccl.so.2 opened at run time or, under the emulation, with stand-ins in which
// the ranks, threads of one process or processes under mpirun, meet in shared memory (a
// file the unique id names, mapped by every member); its collectives run on a communication stream
// ordered by events (collective.go, collective_host.go), each on the communicator of its
// own group's ranks (collective_groups.go: the tp and dp pairs of dp 2 × tp 2): data and
// expert parallelism with ZeRO 0–3 (zero3.go for ZeRO 3's gathers), tensor parallelism
// (collective_tp.go: the vocabulary-parallel loss's passes; an MoE stage's experts split
// along their hidden width, their outputs all-reduced over tp), its sequence parallelism
// (collective_sp.go: the all_gather and reduce_scatter along the tokens as ncclAllGather
// and ncclReduceScatter of each rank's contiguous rows, seq_slice as a row copy) and
// pipeline stages, any number of them (pipeline.go: each pair of neighbouring stages on
// its own communicator, the 1F1B steady state's crossing send and receive one NCCL group;
// a stage's MoE layers lower as on one rank, between its messages, moe.go). A collective
// of many sends and receives (an expert exchange over many ranks, ZeRO 3's gather of a
// layer's tensors) is a row each of a table that every op of the same shape shares, run by
// one loop (collective_host.go): HunYuan-1T's trillion stage on 192 ranks has 3,072 calls
// per exchange, and written out one line a call its rank-0 host program was 57 MB (4.8 MB
// with the tables). The kernel launches are folded the same way (launch_table.go): a run
// of four or more launches with no host work between them (no collective, event, cache
// copy or settle step) is one table of rows run by moec_launch_run, each row's arguments
// typed cells (arena offsets, constants, the optimizer's scalars and the loss scale read
// as the launch is issued) and a row of a layer whose attention weights may be shared
// conditional on the layer's die. HunYuan-1T's dense rank, 10,460 launches, had a 7.86 MB
// host program written out one C block a launch; with the tables it is 4.86 MB, 2.2 MB of
// it the rotary table's constants.
//
// Attention runs fused where it can (kernels_flash.cu, FlashAttention-2's online softmax
// with no [T, T] buffer; flash.go for standard attention's score, softmax and weighted-sum
// chain, flash_mla.go for multi-head latent attention, whose query/key heads are wider
// than its value heads): latent attention's training forward saves each row's
// log-sum-exp instead of writing its weights, its backward recomputes them (mla_train.go),
// and its prefill runs the same forward (mla_decode.go); a sliding window or chunk keeps
// kernels_mla.cu's warp-per-row kernels. The step program's memory plan still places the
// buffers the fused chains skip (the CPU executor writes them), so Options.Compact
// (compact.go; runtime/gpu and `moec build` set it) places the device arena again without
// the buffers nothing of the lowering touches: the memory FlashAttention saves is saved.
//
// buildargs.go holds the command lines runtime/gpu compiles a program's sources with, and
// the Makefile over them that `moec build` writes into each stage's cuda-step/ folder.
//
// The offloaded optimizer (offload.go) keeps the memory plan's host tier in one pinned host
// arena: each group's gradients are copied there on a copy stream after an event of the
// compute stream, the host program updates them on the CPU once that copy's event has
// completed, and the weights return on the copy stream before the compute stream reads
// them again.
//
// The unified cache (cache.go, AngelPTM's one view of GPU and host memory) keeps the
// parameters, gradients and moments in that pinned host arena and the units the step uses
// in device slots: a fetch copies a unit's host tensors in on the copy stream after an
// event the compute stream records right after the last op that read or wrote those
// device bytes (the slot's previous occupants' last readers), so the copy overlaps the
// ops since; the compute stream waits for the fetch's event before the first op that
// reads the unit; a write-back copies the device gradients out after the last op that
// wrote them (a later
// contribution staged and added on the CPU), the compute stream waiting for it before it
// writes those bytes again; an evict moves nothing; the norm and AdamW run on the CPU over
// the host tier, the AdamW of a large tensor and the sums of squares of many split over
// CPU threads (MOEC_HOST_THREADS), bitwise as on one. On data-parallel ranks the
// gradients' all_reduce over the host tier is staged through the device
// (collective_cache.go): chunks of at most a page copied into a staging workspace after
// the arena, reduced by NCCL and copied back on the communication stream, after the host
// waited for the write-backs and before it reads the results; under ZeRO 1 and 2 the
// reduce_scatter into the rank's host gradient shard and the all_gather of the updated
// shards into the host weights go the same way, a part of every rank's shard at a time;
// under ZeRO 3 the cache's fetch, an all_gather from the ranks' host shards, copies the
// rank's own parts from its host shard into the device copies on the communication
// stream and sends them from there (zero3.go). Every layout runs under the cache (data,
// expert, tensor, sequence and pipeline parallelism, ZeRO 0–3); a compute-stream event a
// cache copy waits for is recorded after the compute stream waited for the collectives
// queued before it, which may touch the copy's device bytes on the communication stream.
package cudastep
