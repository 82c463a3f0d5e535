// Package compress writes and loads compressed checkpoints for serving: weight-only
// quantisation (int8 per output channel, int4 in groups) chosen separately for routed
// experts, dense matrices (attention and dense or shared FFNs), the embedding and the
// head, and expert pruning by routing frequency (or gate mass) over a calibration text.
//
// In: a trained checkpoint (runtime/checkpoint) and Options. Out: a checkpoint directory
// that eval, generate and serve load with Load (runtime/train.LoadNet does so when it sees
// one), running the quantised matrices through runtime/quant's integer kernels; nothing
// is dequantised to float32 at load.
//
// Layout of a compressed checkpoint directory:
//
//	manifest.json      a runtime/checkpoint manifest: the (pruned) model config, its hash,
//	                   the source's train, stage, step and seed, and the SHA-256 and size
//	                   of every file below. No optimizer state.
//	compression.json   what was done (Manifest): the source checkpoint and the SHA-256 of
//	                   its model.safetensors, the scheme of each kind of matrix, every
//	                   quantised tensor with its bits and group, the experts kept per MoE
//	                   layer with their routing counts, and the weight bytes before and
//	                   after.
//	model.safetensors  every parameter of the compressed model, by its Hugging Face name:
//	                   float32 (F32) where not quantised; a quantised matrix NAME [out, in]
//	                   as NAME, I8 [out, in] (int8) or U8 [out, in/2] (int4, two values a
//	                   byte in blocks of 32 columns, runtime/quant's layout), and
//	                   NAME_scale, F32 [out, in/group] (one column per output channel
//	                   without groups).
//	run.json           the source run's spec, when it had one, so eval finds its data.
//
// Routers, router tables, norms, biases, positions and talking-heads matrices stay
// float32. A tied head is the embedding and is quantised as the embedding. Pruning keeps
// the same number of experts in every MoE layer, the most often chosen over the
// calibration text (or, by gate mass, those whose combine weights sum highest; ties to the
// lower index), renumbered in their old order; the router
// loses the rows (and bias entries) of the pruned experts. Gates renormalised over the
// top k (normalize) and sigmoid scores are unchanged for a token whose experts are all
// kept; unnormalised softmax gates grow by the score mass the pruned experts held.
//
// The directory is written under a temporary name beside the target and renamed into
// place when complete, each file written with internal/atomicfile.
package compress
