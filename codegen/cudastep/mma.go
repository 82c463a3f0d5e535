package cudastep

import (
	_ "embed"
	"fmt"
)

// The tensor-core matrix products (kernels_mma.cu): bf16 or fp16 operands, fp32
// accumulation, for the three products of a training step over row-major fp32
// activations, W[out, in] being a layer's weights:
//
//	forward       y[M, N]  (+)= x[M, K]·Wᵀ (+ b[N])   (matmul, grouped_matmul)
//	input grad    dx[M, K] (+)= dy[M, N]·W            (matmul_dx, grouped_matmul_dx)
//	weight grad   dW[N, K] (+)= dyᵀ·x                 (matmul_dw, grouped_matmul_dw)
//
// and the bias gradient db (+)= Σ dy. The forward and the input gradient read W as the
// caller's 16-bit copy of the fp32 master weights (u16 storage, the same precision the
// product rounds to anyway: half the bytes of fp32 and copied to shared memory by
// cp.async without conversion); CastLaunch makes that copy after each optimizer update.
// The weight gradient reads two fp32 activations and adds into the fp32 gradient.
// Activations are rounded to bf16/fp16 (nearest even) when staged into shared memory.
//
// The grouped forms run all experts in one launch over the permuted rows: expert e's rows
// are rows [first, first+counts[e]) of the permuted buffers, counts read from a device
// int array, first = e·Slots (the [experts, slots, width] dispatch layout) or offsets[e]
// (the packed layout, a device int array). Expert e's weights, biases and weight
// gradients are found at a fixed element stride from expert 0's (not through a pointer
// table): the 16-bit weight copy is one [experts, N, K] workspace by construction, and
// the fp32 gradients and biases must be evenly strided in the arena (EvenStride checks
// the planned offsets). Forward and input-gradient blocks each find their expert and row
// tile from the counts (a warp prefix sum over the experts' tile counts), so the grid is
// the static bound ceil(rows/128) + experts row tiles and empty experts and unfilled slots
// cost nothing; weight-gradient blocks are one z-slice per expert, and an empty expert
// adds nothing (returns at once).
//
// Expected efficiency (an estimate: nothing here has run on a GPU, so no measurement
// exists). The kernel is the classic Ampere design: 128×128×32 block tiles, 8 warps of
// 64×32, mma.sync.m16n8k16 from ldmatrix fragments, two shared-memory stages (40 KiB),
// 16-bit weights by cp.async and fp32 activations through registers. An engineer would
// expect, for large products (M, N, K ≥ 2048) on an A100, about 55–70% of the 312 TFLOP/s
// bf16 peak for the forward and input gradient (cuBLAS reaches ~80%; the fp32 activation
// loads double the A-operand traffic, and the conversion in the staging path and two
// stages instead of three or four cost the rest), and 45–60% for the weight gradient
// (both operands fp32 and transposed, and no split-K: a small N×K with many tokens leaves
// SMs idle). On an H100 the same mma.sync code is limited to roughly 40–50% of the
// 989 TFLOP/s dense bf16 peak, since only wgmma with TMA reaches Hopper's full rate.
// Grouped products lose a further 5–15% to partial row tiles when experts receive few
// tokens (counts ≪ 128). These are the numbers to replace once `make gpu-check` measures
// them.

//go:embed kernels_mma.cu
var mmaSource string

// Precision is the 16-bit format a tensor-core product rounds its operands to.
type Precision uint8

const (
	BF16 Precision = iota // bfloat16: fp32's range, 8 bits of mantissa
	FP16                  // IEEE half: 11 bits of mantissa, range ±65504
)

func (p Precision) suffix() string {
	if p == FP16 {
		return "f16"
	}
	return "bf16"
}

// The block tile and block size of kernels_mma.cu (MMA_BM, MMA_BN, MMA_THREADS).
const (
	mmaTileRows    = 128
	mmaTileCols    = 128
	mmaThreads     = 256
	mmaSumColumns  = 32 // columns of a bias-gradient block
	mmaCastThreads = 256
	mmaCastBlocks  = 1024 // the casts' grid-stride cap
)

// MMAKernels lists every __global__ of kernels_mma.cu with its parameters' C types.
func MMAKernels() []Kernel {
	fwd := []ParamKind{PtrF32, PtrU16, PtrF32, PtrF32, I32, I32, I32, I32, I32}
	dx := []ParamKind{PtrF32, PtrU16, PtrF32, I32, I32, I32, I32}
	dw := []ParamKind{PtrF32, PtrF32, PtrF32, I32, I32, I32, I32}
	gfwd := []ParamKind{PtrF32, PtrU16, PtrF32, PtrF32, PtrI32, PtrI32, I32, I64, I32, I32, I64, I64, I32, I32}
	gdx := []ParamKind{PtrF32, PtrU16, PtrF32, PtrI32, PtrI32, I32, I64, I32, I32, I64, I32}
	gdw := []ParamKind{PtrF32, PtrF32, PtrF32, PtrI32, PtrI32, I32, I64, I32, I32, I64, I32}
	var ks []Kernel
	for _, p := range []Precision{BF16, FP16} {
		s := p.suffix()
		ks = append(ks,
			Kernel{Name: "mma_fwd_" + s, Params: fwd},
			Kernel{Name: "mma_dx_" + s, Params: dx},
			Kernel{Name: "mma_dw_" + s, Params: dw},
			Kernel{Name: "mma_grouped_fwd_" + s, Params: gfwd},
			Kernel{Name: "mma_grouped_dx_" + s, Params: gdx},
			Kernel{Name: "mma_grouped_dw_" + s, Params: gdw},
			Kernel{Name: "mma_cast_" + s, Params: []ParamKind{PtrF32, PtrU16, I64}},
		)
	}
	return append(ks,
		Kernel{Name: "mma_bias_grad", Params: []ParamKind{PtrF32, PtrF32, I32, I32, I32}},
		Kernel{Name: "mma_grouped_bias_grad", Params: []ParamKind{PtrF32, PtrF32, PtrI32, PtrI32, I32, I64, I32, I64, I32}},
	)
}

// MMASource is the CUDA source of the tensor-core products (kernels_mma.cu).
func MMASource() string { return mmaSource }

// MatMul is one dense product: M rows (tokens), W[N, K].
type MatMul struct {
	Precision  Precision
	M, N, K    int
	Accumulate bool // add into the output instead of overwriting it
}

func (g MatMul) check(kernel string) error {
	if g.M <= 0 || g.N <= 0 || g.K <= 0 || g.M > mmaMaxInt32 || g.N > mmaMaxInt32 || g.K > mmaMaxInt32 {
		return fmt.Errorf("cudastep: %s: sizes M=%d N=%d K=%d out of range", kernel, g.M, g.N, g.K)
	}
	if tiles := mmaCeilDiv(max(g.M, g.N), mmaTileRows); tiles > mmaMaxGridY {
		return fmt.Errorf("cudastep: %s: %d row tiles exceed the grid's %d", kernel, tiles, mmaMaxGridY)
	}
	return nil
}

func (g MatMul) kernel(form string) string { return "mma_" + form + "_" + g.Precision.suffix() }

const (
	mmaMaxInt32 = 1<<31 - 1
	mmaMaxGridY = 65535 // a grid's y and z extents
)

// Forward is y[M, N] (+)= x[M, K]·w[N, K]ᵀ (+ bias[N]): x, bias and y fp32, w the 16-bit
// copy of the weights. bias may be nil.
func (g MatMul) Forward(x, w, y Arg, bias *Arg) (Launch, error) {
	if err := g.check(g.kernel("fwd")); err != nil {
		return Launch{}, err
	}
	useBias, b := mmaBias(bias, y)
	if err := mmaCheckKinds(g.kernel("fwd"), []Arg{x, w, b, y}, PtrF32, PtrU16, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	return Launch{
		Kernel: g.kernel("fwd"),
		Grid:   [3]int{mmaCeilDiv(g.N, mmaTileCols), mmaCeilDiv(g.M, mmaTileRows), 1},
		Block:  [3]int{mmaThreads, 1, 1},
		Args: []Arg{x, w, b, y, IntArg(I32, int64(g.M)), IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)),
			IntArg(I32, useBias), mmaFlag(g.Accumulate)},
	}, nil
}

// InputGrad is dx[M, K] (+)= dy[M, N]·w[N, K]: dy and dx fp32, w the 16-bit copy.
func (g MatMul) InputGrad(dy, w, dx Arg) (Launch, error) {
	if err := g.check(g.kernel("dx")); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds(g.kernel("dx"), []Arg{dy, w, dx}, PtrF32, PtrU16, PtrF32); err != nil {
		return Launch{}, err
	}
	return Launch{
		Kernel: g.kernel("dx"),
		Grid:   [3]int{mmaCeilDiv(g.K, mmaTileCols), mmaCeilDiv(g.M, mmaTileRows), 1},
		Block:  [3]int{mmaThreads, 1, 1},
		Args:   []Arg{dy, w, dx, IntArg(I32, int64(g.M)), IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)), mmaFlag(g.Accumulate)},
	}, nil
}

// WeightGrad is dw[N, K] (+)= dy[M, N]ᵀ·x[M, K], all fp32 (the operands rounded to the
// precision on staging, the sum in fp32).
func (g MatMul) WeightGrad(dy, x, dw Arg) (Launch, error) {
	if err := g.check(g.kernel("dw")); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds(g.kernel("dw"), []Arg{dy, x, dw}, PtrF32, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	return Launch{
		Kernel: g.kernel("dw"),
		Grid:   [3]int{mmaCeilDiv(g.K, mmaTileCols), mmaCeilDiv(g.N, mmaTileRows), 1},
		Block:  [3]int{mmaThreads, 1, 1},
		Args:   []Arg{dy, x, dw, IntArg(I32, int64(g.M)), IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)), mmaFlag(g.Accumulate)},
	}, nil
}

// BiasGrad is db[N] (+)= Σ_m dy[m, N], in fp32.
func (g MatMul) BiasGrad(dy, db Arg) (Launch, error) {
	if err := g.check("mma_bias_grad"); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds("mma_bias_grad", []Arg{dy, db}, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	return Launch{
		Kernel: "mma_bias_grad",
		Grid:   [3]int{mmaCeilDiv(g.N, mmaSumColumns), 1, 1},
		Block:  [3]int{mmaThreads, 1, 1},
		Args:   []Arg{dy, db, IntArg(I32, int64(g.M)), IntArg(I32, int64(g.N)), mmaFlag(g.Accumulate)},
	}, nil
}

// GroupedMatMul is one product per expert in one launch, over the permuted rows.
type GroupedMatMul struct {
	Precision Precision
	Experts   int
	// Rows is the permuted buffers' row count (the static dispatch size: experts × slots,
	// or tokens × top_k when packed): it bounds the experts' row tiles.
	Rows int
	// Slots > 0: expert e's rows begin at row e·Slots ([experts, slots, width]); 0: at
	// Offsets[e] (the packed layout).
	Slots int
	N, K  int // expert e's weights are [N, K]
	// Counts and Offsets are device int arrays [Experts]: expert e's filled rows and, when
	// Slots is 0, its first row. With Slots > 0 Offsets is not read (pass Counts).
	Counts, Offsets Arg
	// WeightStride is the elements from one expert's 16-bit weights to the next's (N·K
	// for a contiguous copy); GradStride the same for the fp32 weight gradients, and
	// BiasStride for the biases and their gradients.
	WeightStride, GradStride, BiasStride int64
	Accumulate                           bool
}

func (g GroupedMatMul) kernel(form string) string {
	return "mma_grouped_" + form + "_" + g.Precision.suffix()
}

func (g GroupedMatMul) check(what string, needStride int64) error {
	switch {
	case g.Experts <= 0 || g.Experts > mmaMaxGridY:
		return fmt.Errorf("cudastep: %s: %d experts, want 1..%d", what, g.Experts, mmaMaxGridY)
	case mmaCeilDiv(max(g.N, g.K), mmaTileCols) > mmaMaxGridY:
		return fmt.Errorf("cudastep: %s: N=%d or K=%d exceeds the grid's %d column tiles", what, g.N, g.K, mmaMaxGridY)
	case g.Rows < 0 || g.N <= 0 || g.K <= 0 || g.Rows > mmaMaxInt32 || g.N > mmaMaxInt32 || g.K > mmaMaxInt32:
		return fmt.Errorf("cudastep: %s: sizes rows=%d N=%d K=%d out of range", what, g.Rows, g.N, g.K)
	case g.Slots < 0 || g.Slots > 0 && int64(g.Slots)*int64(g.Experts) > int64(g.Rows):
		return fmt.Errorf("cudastep: %s: %d slots for %d experts exceed the %d rows", what, g.Slots, g.Experts, g.Rows)
	case needStride < 0:
		return fmt.Errorf("cudastep: %s: negative expert stride %d", what, needStride)
	}
	return mmaCheckKinds(what, []Arg{g.Counts, g.Offsets}, PtrI32, PtrI32)
}

// rowTiles bounds the forward and input-gradient grids: Σ_e ceil(counts[e]/128) ≤
// ceil(rows/128) + experts.
func (g GroupedMatMul) rowTiles() int { return mmaCeilDiv(g.Rows, mmaTileRows) + g.Experts }

func (g GroupedMatMul) layout() []Arg {
	return []Arg{g.Counts, g.Offsets, IntArg(I32, int64(g.Experts)), IntArg(I64, int64(g.Slots))}
}

// Forward is, for every expert e, y_e (+)= x_e·W_eᵀ (+ bias_e): x, y fp32 [Rows, K] and
// [Rows, N]; w the 16-bit weights of expert 0 (then every WeightStride elements); bias
// (nil for none) expert 0's [N] fp32 bias (then every BiasStride).
func (g GroupedMatMul) Forward(x, w, y Arg, bias *Arg) (Launch, error) {
	name := g.kernel("fwd")
	if err := g.check(name, min(g.WeightStride, g.BiasStride)); err != nil {
		return Launch{}, err
	}
	useBias, b := mmaBias(bias, y)
	if err := mmaCheckKinds(name, []Arg{x, w, b, y}, PtrF32, PtrU16, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	args := append([]Arg{x, w, b, y}, g.layout()...)
	args = append(args, IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)), IntArg(I64, g.WeightStride),
		IntArg(I64, g.BiasStride), IntArg(I32, useBias), mmaFlag(g.Accumulate))
	return Launch{Kernel: name, Grid: [3]int{g.rowTiles(), mmaCeilDiv(g.N, mmaTileCols), 1}, Block: [3]int{mmaThreads, 1, 1}, Args: args}, nil
}

// InputGrad is, for every expert e, dx_e (+)= dy_e·W_e: dy [Rows, N], dx [Rows, K] fp32.
func (g GroupedMatMul) InputGrad(dy, w, dx Arg) (Launch, error) {
	name := g.kernel("dx")
	if err := g.check(name, g.WeightStride); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds(name, []Arg{dy, w, dx}, PtrF32, PtrU16, PtrF32); err != nil {
		return Launch{}, err
	}
	args := append([]Arg{dy, w, dx}, g.layout()...)
	args = append(args, IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)), IntArg(I64, g.WeightStride), mmaFlag(g.Accumulate))
	return Launch{Kernel: name, Grid: [3]int{g.rowTiles(), mmaCeilDiv(g.K, mmaTileCols), 1}, Block: [3]int{mmaThreads, 1, 1}, Args: args}, nil
}

// WeightGrad is, for every expert e, dW_e (+)= dy_eᵀ·x_e: dw expert 0's fp32 [N, K]
// gradient (then every GradStride elements).
func (g GroupedMatMul) WeightGrad(dy, x, dw Arg) (Launch, error) {
	name := g.kernel("dw")
	if err := g.check(name, g.GradStride); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds(name, []Arg{dy, x, dw}, PtrF32, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	args := append([]Arg{dy, x, dw}, g.layout()...)
	args = append(args, IntArg(I32, int64(g.N)), IntArg(I32, int64(g.K)), IntArg(I64, g.GradStride), mmaFlag(g.Accumulate))
	return Launch{
		Kernel: name,
		Grid:   [3]int{mmaCeilDiv(g.K, mmaTileCols), mmaCeilDiv(g.N, mmaTileRows), g.Experts},
		Block:  [3]int{mmaThreads, 1, 1},
		Args:   args,
	}, nil
}

// BiasGrad is, for every expert e, db_e (+)= Σ over its rows of dy_e: db expert 0's [N]
// fp32 bias gradient (then every BiasStride elements).
func (g GroupedMatMul) BiasGrad(dy, db Arg) (Launch, error) {
	const name = "mma_grouped_bias_grad"
	if err := g.check(name, g.BiasStride); err != nil {
		return Launch{}, err
	}
	if err := mmaCheckKinds(name, []Arg{dy, db}, PtrF32, PtrF32); err != nil {
		return Launch{}, err
	}
	args := append([]Arg{dy, db}, g.layout()...)
	args = append(args, IntArg(I32, int64(g.N)), IntArg(I64, g.BiasStride), mmaFlag(g.Accumulate))
	return Launch{Kernel: name, Grid: [3]int{mmaCeilDiv(g.N, mmaSumColumns), 1, g.Experts}, Block: [3]int{mmaThreads, 1, 1}, Args: args}, nil
}

// CastLaunch writes the 16-bit copy dst[n] of the fp32 src[n] (round to nearest even):
// the weights the forward and input-gradient products read, refreshed after each update.
func CastLaunch(p Precision, n int64, src, dst Arg) (Launch, error) {
	name := "mma_cast_" + p.suffix()
	if n <= 0 {
		return Launch{}, fmt.Errorf("cudastep: %s: %d elements", name, n)
	}
	if err := mmaCheckKinds(name, []Arg{src, dst}, PtrF32, PtrU16); err != nil {
		return Launch{}, err
	}
	blocks := min((n+mmaCastThreads-1)/mmaCastThreads, mmaCastBlocks)
	return Launch{Kernel: name, Grid: [3]int{int(blocks), 1, 1}, Block: [3]int{mmaCastThreads, 1, 1},
		Args: []Arg{src, dst, IntArg(I64, n)}}, nil
}

// EvenStride reports the common distance between consecutive offsets (the experts'
// buffers in the arena, in elements), and whether there is one: the grouped products
// find expert e's weights, biases and gradients at e times a stride from expert 0's.
func EvenStride(offsets []int64) (int64, bool) {
	if len(offsets) < 2 {
		return 0, len(offsets) == 1
	}
	stride := offsets[1] - offsets[0]
	for i := 2; i < len(offsets); i++ {
		if offsets[i]-offsets[i-1] != stride {
			return 0, false
		}
	}
	return stride, stride >= 0
}

// biasArg is the launch's use_bias flag and bias pointer: without a bias the kernel does
// not read it, and any valid pointer of the right kind (the output) stands in.
func mmaBias(bias *Arg, out Arg) (int64, Arg) {
	if bias == nil {
		return 0, out
	}
	return 1, *bias
}

func mmaFlag(b bool) Arg {
	if b {
		return IntArg(I32, 1)
	}
	return IntArg(I32, 0)
}

// checkKinds reports an argument whose kind is not the kernel's parameter kind.
func mmaCheckKinds(kernel string, args []Arg, kinds ...ParamKind) error {
	for i, a := range args {
		if a.Kind != kinds[i] {
			return fmt.Errorf("cudastep: %s: argument %d is a %s, want a %s", kernel, i, a.Kind.CType(), kinds[i].CType())
		}
		if !a.Kind.Pointer() || a.Buf >= 0 || a.Work != "" {
			continue
		}
		return fmt.Errorf("cudastep: %s: argument %d (%s) names no buffer or workspace", kernel, i, a.Kind.CType())
	}
	return nil
}

func mmaCeilDiv(a, b int) int { return (a + b - 1) / b }
