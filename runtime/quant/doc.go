// Package quant holds weight-only quantised matrices and the kernels that multiply by
// them without dequantising: int8 per output channel or in groups, and int4 in groups
// packed two to a byte.
//
// In: a float32 weight matrix [Out, In] (a linear layer's, as Hugging Face stores it) and
// a scheme (bits, group). Out: a Matrix holding the quantised values and their scales, and
// MulT, which computes y = x·Wᵀ for rows of x against it.
//
// Quantisation is symmetric with round-to-nearest: each group of Group consecutive input
// columns of a row has one float32 scale s = max|w| / qmax (qmax = 127 for int8, 7 for
// int4) and values q = round(w/s) clamped to [−qmax, qmax], so |w − s·q| ≤ s/2. Group is
// In for one scale per output channel; otherwise a multiple of 32 that divides In. Int4
// needs groups (a multiple of 32), so its In is a multiple of 32 too.
//
// Layout (what a compressed checkpoint stores, see runtime/compress):
//
//	int8: Data is Out·In bytes, row-major, each a two's-complement int8.
//	int4: Data is Out·In/2 bytes, row-major, 16 bytes per block of 32 columns: byte j of a
//	      block holds column j in its low nibble and column j+16 in its high nibble, each
//	      stored as q+8 (0..15). (The layout of llama.cpp's Q4_0 blocks: one load and two
//	      shifts unpack a block in a register.)
//	Scales is Out·(In/Group) float32, row-major: scale g of row o covers columns
//	[g·Group, (g+1)·Group).
//
// The product quantises each row of x to int8 in blocks of 32 columns (one scale each,
// max|x|/127), forms the integer dot product of every block with the weights, and adds it
// times the two scales into a float32 sum. With cgo on amd64 the blocks go through C:
// AVX-512 VNNI when the CPU has AVX-512 VNNI and VL, on 512-bit vectors (two blocks each,
// eight output rows per load of x, the weights as vpdpbusd's unsigned operand offset by
// 128 or 8 and the offset's share subtracted from x's side once per block pair) where the
// width and group are multiples of 64 and the CPU has AVX-512 F, BW and DQ, else vpdpbusd
// on 256-bit vectors; else AVX2 (vpmaddubsw, vpmaddwd); int4 blocks are unpacked in
// registers. A product small enough for one core quantises x and multiplies in one call
// into C; MulTShared quantises x once for two or three matrices of its width (a layer's
// queries, keys and values) and runs them all in that one call. The CPU is asked at
// start-up (cpuid via __builtin_cpu_supports), never assumed. Without cgo, off amd64,
// built with -tags noopenblas, or on a CPU without AVX2, a Go loop computes the same
// integer sums. The result differs from the dequantised fp32 product only by the
// activations' rounding, at most Σ_b (s_b/2)·Σ_{k∈b} |ŵ_k| per output, plus float
// rounding (BoundT computes it).
package quant
