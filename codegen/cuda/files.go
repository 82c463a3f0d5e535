package cuda

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/moec-dev/moec/kernels"
)

// Prelude lets clang compile the generated CUDA without a CUDA SDK
// (clang -x cuda -nocudainc -nocudalib -include moec_clang_prelude.h): it defines the
// attribute macros, includes clang's builtin-variable header and declares the few
// runtime types and functions the host code names. nvcc never sees it.
//
//go:embed moec_clang_prelude.h
var prelude string

// Emulation runs the generated CUDA on the CPU for tests (codegen/cuda's and the GPU
// check's): compile the .cu files as C++ with -include of this header. Blocks run one
// after another, a block's threads as real threads.
//
//go:embed moec_cpu_emu.h
var emulation string

// EmulationHeader returns the text of the CPU emulation header (moec_cpu_emu.h).
func EmulationHeader() string { return emulation }

// PreludeName is the file name the prelude is written under.
const PreludeName = "moec_clang_prelude.h"

// Prelude returns the text of the clang prelude header.
func Prelude() string { return prelude }

// Source is moe_kernels.cu: every kernel as one __global__ function.
func Source(title string, ks []*kernels.Kernel) (string, error) {
	var w strings.Builder
	w.WriteString(Header + "\n")
	fmt.Fprintf(&w, "// CUDA kernels for %s, lowered from package kernels: one thread per grid point.\n", title)
	w.WriteString("#include \"moe_kernels.h\"\n")
	for _, k := range ks {
		w.WriteString("\n")
		if err := Kernel(&w, k); err != nil {
			return "", err
		}
	}
	return w.String(), nil
}

// deviceMath defines the math helpers the kernels call. Under clang they are the NVVM
// builtins (no CUDA SDK needed); nvcc does not know those builtins, so there they are the
// same PTX instructions as inline assembly. Either way: no libm on the device. (The
// third case is the CPU emulation that tests use to run the CUDA code without a GPU.)
const deviceMath = `#if defined(MOEC_CPU_EMULATION)
// Tests run the kernels on the CPU; their emulation header defines the helpers.
#elif defined(__NVCC__)
static __device__ __forceinline__ float moe_ex2f_(float x) { float y; asm("ex2.approx.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
static __device__ __forceinline__ float moe_lg2f_(float x) { float y; asm("lg2.approx.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
static __device__ __forceinline__ float moe_sqrtf_(float x) { return __fsqrt_rn(x); }
static __device__ __forceinline__ float moe_fmaxf_(float a, float b) { return fmaxf(a, b); }
static __device__ __forceinline__ float moe_fminf_(float a, float b) { return fminf(a, b); }
#else
static __device__ __forceinline__ float moe_ex2f_(float x) { return __nvvm_ex2_approx_f(x); }
static __device__ __forceinline__ float moe_lg2f_(float x) { return __nvvm_lg2_approx_f(x); }
static __device__ __forceinline__ float moe_sqrtf_(float x) { return __nvvm_sqrt_rn_f(x); }
static __device__ __forceinline__ float moe_fmaxf_(float a, float b) { return __nvvm_fmax_f(a, b); }
static __device__ __forceinline__ float moe_fminf_(float a, float b) { return __nvvm_fmin_f(a, b); }
#endif
// Kernel launch: <<<...>>> on a GPU; threads on the CPU under the test emulation.
#if defined(MOEC_CPU_EMULATION)
#define MOEC_LAUNCH(kernel, blocks, threads, stream, ...) moec_emu_launch(blocks, threads, [=] { kernel(__VA_ARGS__); })
#else
#define MOEC_LAUNCH(kernel, blocks, threads, stream, ...) kernel<<<blocks, threads, 0, stream>>>(__VA_ARGS__)
#endif

// Four floats at once: the tiled GEMM's shared-memory reads and its accumulators.
#if defined(__NVCC__)
typedef float4 moe_f4_;
static __device__ __forceinline__ void moe_fma4_(moe_f4_ &acc, float a, moe_f4_ b) {
  acc.x += a * b.x; acc.y += a * b.y; acc.z += a * b.z; acc.w += a * b.w;
}
static __device__ __forceinline__ float moe_f4_get_(moe_f4_ v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
#else
typedef float moe_f4_ __attribute__((ext_vector_type(4)));
static __device__ __forceinline__ void moe_fma4_(moe_f4_ &acc, float a, moe_f4_ b) { acc += a * b; }
static __device__ __forceinline__ float moe_f4_get_(moe_f4_ v, int i) { return v[i]; }
#endif

`

// launcherSig is the host API of one kernel (without the trailing semicolon or body).
func launcherSig(k *kernels.Kernel) string {
	var params []string
	for _, p := range k.Params {
		params = append(params, paramDecl(p))
	}
	params = append(params, "cudaStream_t stream")
	return fmt.Sprintf("cudaError_t moe_launch_%s(%s)", k.Name, strings.Join(params, ", "))
}

// HeaderFile is moe_kernels.h: the kernels' shape constants and the host API.
func HeaderFile(title string, sh kernels.Shape, ks []*kernels.Kernel) string {
	var w strings.Builder
	w.WriteString(Header + "\n")
	fmt.Fprintf(&w, "// Host API of the CUDA kernels for %s. Token counts are arguments; shapes are baked in.\n", title)
	w.WriteString("#ifndef MOEC_MOE_KERNELS_H\n#define MOEC_MOE_KERNELS_H\n\n")
	w.WriteString("#ifdef __NVCC__\n#include <cuda_runtime.h>\n#endif\n\n")
	w.WriteString(deviceMath)
	consts := []struct {
		name string
		v    int64
	}{{"D_MODEL", sh.DModel}, {"EXPERTS", sh.Experts}, {"TOP_K", sh.TopK}, {"EXPERT_HIDDEN", sh.Hidden},
		{"ROUTER_DIM", sh.RouterDim}, {"VOCAB", sh.Vocab}, {"HEADS", sh.Heads}, {"HEAD_DIM", sh.HeadDim}}
	for _, c := range consts {
		fmt.Fprintf(&w, "#define MOEC_%s %d\n", c.name, c.v)
	}
	fmt.Fprintf(&w, "#define MOEC_ACTIVATION \"%s\"\n", sh.Activation)
	w.WriteString("\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n")
	for _, k := range ks {
		fmt.Fprintf(&w, "\n// %s\n%s;\n", k.Doc, launcherSig(k))
	}
	w.WriteString("\n#ifdef __cplusplus\n}\n#endif\n#endif\n")
	return w.String()
}

// Host is moe_host.cu: the launchers. Each computes the number of grid points from the
// token counts and launches one thread per point on the given stream.
func Host(title string, ks []*kernels.Kernel) (string, error) {
	var w strings.Builder
	w.WriteString(Header + "\n")
	fmt.Fprintf(&w, "// Launchers of the CUDA kernels for %s.\n", title)
	w.WriteString("#include \"moe_kernels.h\"\n")
	for _, k := range ks {
		var params, args []string
		for _, p := range k.Params {
			params = append(params, paramDecl(p))
			args = append(args, cname(p.Name))
		}
		fmt.Fprintf(&w, "\nextern \"C\" __global__ void moe_%s(%s, long long total_);\n", k.Name, strings.Join(params, ", "))
		fmt.Fprintf(&w, "\nextern \"C\" %s {\n", launcherSig(k))
		lw := &lowerer{w: &w, depth: 1}
		for _, c := range k.Consts {
			if c.T == kernels.I64 {
				lw.line("const long long %s = %d;", cname(c.Name), c.I)
			}
		}
		var ext []string
		for _, d := range k.Grid {
			x, err := lw.expr(d.Extent)
			if err != nil {
				return "", fmt.Errorf("cuda: launcher %s: %w", k.Name, err)
			}
			ext = append(ext, x)
		}
		lw.line("const long long total_ = %s;", strings.Join(ext, " * "))
		lw.line("if (total_ <= 0) return cudaSuccess;")
		if k.Contraction != nil {
			// One block per output tile, capped: the kernel loops over tiles grid-stride.
			lw.line("const long long tiles_ = %s;", tiles(ext))
			lw.line("const unsigned blocks_ = (unsigned)(tiles_ < (1LL << 20) ? tiles_ : (1LL << 20));")
		} else {
			lw.line("const unsigned blocks_ = (unsigned)((total_ + %d) / %d);", BlockSize-1, BlockSize)
		}
		lw.line("MOEC_LAUNCH(moe_%s, blocks_, %d, stream, %s, total_);", k.Name, BlockSize, strings.Join(args, ", "))
		lw.line("return cudaGetLastError();")
		w.WriteString("}\n")
	}
	return w.String(), nil
}
