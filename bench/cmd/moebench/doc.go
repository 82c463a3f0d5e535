// Command moebench measures moec against its PyTorch peer on one MoE model, in one run, on
// the same machine and threads, and prints the comparison as a Markdown table.
//
// In: flags (repetitions, seconds per measurement, OpenBLAS core types to compare, the
// Python interpreter and the peer script bench/peer/moe_peer.py).
// Out: on stdout, per OpenBLAS setting, the tuned PyTorch thread setting, a correctness
// check of both sides, and a table of training-step, inference-forward and KV-cache
// generation tokens/s, peak resident memory, and each side's achieved GFLOP/s as a share of
// the float32 and bfloat16 product peaks measured in the same run, with the share each
// floor needs (productBound); each as moec / PyTorch with min, median and max over the
// repetitions; then, once per run, the final loss of a -curve-steps loss curve with bf16
// products against float32's (curve.go). -json also writes every raw measurement, the
// curves' losses by step included.
//
// Every measurement runs in its own child process (moebench -worker MODE for moec, the peer
// script for PyTorch), so a side's peak memory is the child's getrusage maxrss and neither
// side warms the other's caches; moec and PyTorch runs are interleaved so that a change in
// machine load falls on both. The model (see benchModel) is the issue's: vocab 256,
// d_model 256, 4 layers of 4 heads, causal attention, sequences of 128, batches of 16,
// pre-RMSNorm, learned positions, 8 SwiGLU experts of 512 in every layer, top-2 softmax
// routing with renormalised gates, balance loss 0.01, dropless, AdamW.
package main
