package cuda_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// emuDriver writes moe_<kernel>_packed(args, 0, total) for every kernel: the calling
// convention of package llvmrt, so the emulated CUDA kernels load and run like the LLVM
// ones. Each block runs BlockSize threads.
func emuDriver(ks []*kernels.Kernel) string {
	var w strings.Builder
	w.WriteString("#include \"moe_kernels.h\"\n")
	for _, k := range ks {
		var params, args []string
		for i, p := range k.Params {
			decl := "float"
			switch p.Elem {
			case kernels.I32:
				decl = "int"
			case kernels.I64:
				decl = "long long"
			}
			if p.Buffer {
				params = append(params, decl+"*")
				args = append(args, fmt.Sprintf("(%s*)a[%d]", decl, i))
			} else {
				params = append(params, decl)
				args = append(args, fmt.Sprintf("*(%s*)a[%d]", decl, i))
			}
		}
		fmt.Fprintf(&w, "extern \"C\" void moe_%s(%s, long long);\n", k.Name, strings.Join(params, ", "))
		fmt.Fprintf(&w, `extern "C" void moe_%[1]s_packed(void **a, long long begin, long long end) {
  const long long total = end;
  const unsigned blocks = (unsigned)((total + %[2]d) / %[3]d);
  moec_emu_launch(blocks, %[3]d, [=] { moe_%[1]s(%[4]s, total); });
}
`, k.Name, cuda.BlockSize-1, cuda.BlockSize, strings.Join(args, ", "))
	}
	return w.String()
}

// TestEmulatedCUDAAgreesWithReference compiles the generated CUDA as C++ under the CPU
// emulation header and checks every kernel against its Go reference: the CUDA lowering's
// semantics (indexing, grid decomposition, control flow, tiling) are tested here; the GPU
// check repeats this on a GPU with nvcc.
func TestEmulatedCUDAAgreesWithReference(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	emu := filepath.Join(t.TempDir(), "moec_cpu_emu.h")
	if err := os.WriteFile(emu, []byte(cuda.EmulationHeader()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"swiglu", "token", "geglu"} {
		t.Run(name, func(t *testing.T) {
			if name == "geglu" {
				// swiglu's kernels but the activation; the GPU check's harness test runs gelu.
				longtest.Require(t, "about 15 s of compiling the geglu shape's kernels")
			}
			sh := kernels.SmallShapes()[name]
			dir, ks := write(t, sh)
			driver := filepath.Join(dir, "driver.cpp")
			if err := os.WriteFile(driver, []byte(emuDriver(ks)), 0o644); err != nil {
				t.Fatal(err)
			}
			so := filepath.Join(dir, "libemu.so")
			cmd := exec.CommandContext(context.Background(), clang, "-std=c++17", "-O1", "-fPIC", "-shared", "-include", emu,
				"-I", dir, "-x", "c++", filepath.Join(dir, "moe_kernels.cu"), driver, "-o", so, "-lpthread")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("compile emulation: %v\n%s", err, out)
			}
			lib, err := llvmrt.Open(so)
			if err != nil {
				t.Fatal(err)
			}
			defer lib.Close()
			env, err := kernels.Fixture(ks, sh, 37, 6, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, reuse := range []float64{0, 1} {
				env.S["reuse"] = reuse
				for _, k := range ks {
					ck, err := lib.Kernel(k)
					if err != nil {
						t.Fatal(err)
					}
					want, got := env.Clone(), env.Clone()
					for _, p := range k.Outputs() {
						if p.Access == kernels.Out && p.Elem == kernels.F32 {
							for i := range got.F[p.Name] {
								got.F[p.Name][i] = float32(math.NaN())
							}
						}
					}
					if err := k.Ref(want); err != nil {
						t.Fatal(err)
					}
					if err := ck.Run(got, 1); err != nil {
						t.Fatal(err)
					}
					if err := kernels.Compare(k, got, want, 2e-4); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}
