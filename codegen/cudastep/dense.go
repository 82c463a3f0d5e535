package cudastep

import _ "embed"

// denseSource is kernels_dense.cu: the dense fp32 SIMT kernels (the reference path).
//
//go:embed kernels_dense.cu
var denseSource string

// denseKernels is every __global__ function of kernels_dense.cu with its parameters' C
// types in order (TestKernelTablesMatchSources holds the two together).
func denseKernels() []Kernel {
	P, I, N, L, F := PtrF32, PtrI32, I32, I64, F32
	return []Kernel{
		{"dense_zero", []ParamKind{P, L}},
		{"dense_copy", []ParamKind{P, P, L}},
		{"dense_add", []ParamKind{P, P, P, L}},
		{"dense_accumulate", []ParamKind{P, P, L}},
		{"dense_embed", []ParamKind{I, P, P, N, N, N, N, N, N}},
		{"dense_embed_bwd", []ParamKind{P, I, P, N, N, N, N, N, N}},
		{"dense_row_mean", []ParamKind{P, P, N, N}},
		{"dense_norm", []ParamKind{P, P, P, P, P, N, N, F, N}},
		{"dense_norm_bwd_dx", []ParamKind{P, P, P, P, P, P, N, N, N}},
		{"dense_norm_bwd_dw", []ParamKind{P, P, P, P, P, P, N, N}},
		{"dense_gemm", []ParamKind{P, P, P, P, N, N, N, N, N, N, N, N, F, F, N, N, N, N, N, L, L, L, L, L, L, L, L, L}},
		{"dense_col_sum", []ParamKind{P, P, N, N}},
		{"dense_rotary", []ParamKind{P, P, N, N, N, N, N}},
		{"dense_softmax", []ParamKind{P, P, N, N}},
		{"dense_softmax_bwd", []ParamKind{P, P, P, N, N, N}},
		{"dense_act", []ParamKind{P, P, P, L, N}},
		{"dense_act_bwd", []ParamKind{P, P, P, P, P, L, N, N, N}},
		{"dense_xent", []ParamKind{P, I, P, P, N, N, N, F}},
		{"dense_xent_max", []ParamKind{P, P, N, N}},
		{"dense_xent_sum", []ParamKind{P, I, P, P, N, N, N}},
		{"dense_xent_tp", []ParamKind{P, I, P, P, P, P, N, N, N, F}},
		{"dense_xent_mean", []ParamKind{P, P, P, N}},
		{"dense_distill", []ParamKind{P, I, P, P, P, N, N, F, F, F, F}},
		{"dense_distill_mean", []ParamKind{P, P, P, P, N, F, F}},
		{"dense_sumsq", []ParamKind{P, L, P}},
		{"dense_adamw", []ParamKind{P, P, P, P, L, F, F, F, F, F, F, F, F, F}},
	}
}

// KernelFile is one kernel source of the step kernel library: its file name, its CUDA
// text and the table of its kernels.
type KernelFile struct {
	Name    string
	Source  string
	Kernels []Kernel
}

// Library is every kernel file of the step kernel library, in the order the host program
// looks kernels up.
func Library() []KernelFile {
	return []KernelFile{
		{Name: "kernels_dense.cu", Source: denseSource, Kernels: denseKernels()},
		{Name: "kernels_moe.cu", Source: moeSource, Kernels: moeKernels()},
		{Name: "kernels_flash.cu", Source: flashSource, Kernels: FlashKernels()},
		{Name: "kernels_mma.cu", Source: mmaSource, Kernels: MMAKernels()},
		{Name: "kernels_decode.cu", Source: decodeSource, Kernels: DecodeKernels()},
		{Name: "kernels_mla.cu", Source: mlaSource, Kernels: MLAKernels()},
	}
}
