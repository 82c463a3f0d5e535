// Package step lowers a training stage to step programs: for each rank of a parallel
// layout, the ordered list of operations one training step runs, over named buffers with
// static shapes, and a memory plan that gives every buffer an offset in one arena.
//
// In: a resolved *program.Model (a stage's model, from program.StageModel), the step's
// batch (micro-batch sequences, sequence length, micro-batches per step) and a Layout
// (data, expert, tensor and pipeline parallel sizes, ZeRO stage, optimizer offload,
// sequence parallelism, recompute mode, the unified cache).
// Out: Lower returns one *Program per rank, or diagnostics (E0509 when the layout does
// not divide what it splits, E0510 for a model feature the step program does not lower:
// the step column of the features table, compiler/features; E0511 when the unified
// cache's device budget cannot hold a unit).
//
// A program is forward, backward, gradient reduction and the optimizer update, with the
// collectives each parallel axis needs (Axes: one table, read by lowering and by layout
// validation): all-reduce, reduce-scatter, all-gather and all-to-all-v over a named group,
// and send/recv between pipeline stages under a 1F1B schedule of the micro-batches (the
// activations, and with attention-weight sharing the last layer's attention weights:
// share_pp.go; the tables several stages hold, a tied embedding and the token-embedding
// router table, summed over their own groups: tied.go, router_table.go), and
// host↔device moves where the optimizer is offloaded, or the unified cache's fetches,
// evictions and gradient write-backs, chosen by simulating its page pool (cache.go).
// Backward ops come from each forward op's own rule (grad.go), so the backward is data,
// listed and golden-tested like the forward. Parameters are named by their structured identity (compiler/params).
//
// Inference lowers the same way (LowerInference; decode.go): a prefill of a batch of
// prompts, which writes every layer's KV cache (KindCache) and ends with each prompt's
// last logits, and one decoding step against those caches, under tensor and expert
// parallelism, with no backward, loss or optimizer. A feeding program (LowerFeed; feed.go)
// runs rows of several sequences, each at its own position, as one batch over the same
// caches: prompt chunks appended beside other sequences' decoding tokens (continuous
// batching, as runtime/nn's Decoder.Feed).
//
// Format writes a program as the listing `moec build` stores per stage and rank
// (program.txt): one line per op with its inputs, outputs, bytes moved and FLOPs. Verify
// checks a program (every buffer written before it is read, memory-plan offsets of live
// buffers never overlap) and a whole layout (every collective is matched, in the same
// order, by every rank of its group; every send has its receive).
package step
