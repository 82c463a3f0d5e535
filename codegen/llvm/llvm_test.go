package llvm_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/llir/llvm/asm"

	"github.com/moec-dev/moec/codegen/llvm"
	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// tolerance of LLVM kernels against the Go references, relative to max(1, |want|):
// clang reassociates sums and fuses multiply-adds, and libm's expf differs from Go's
// float64 exp rounded to float32 in the last bits.
const tolerance = 2e-4

func module(t testing.TB, sh kernels.Shape) ([]*kernels.Kernel, string) {
	t.Helper()
	ks, err := kernels.Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	src, err := llvm.Module("test", ks)
	if err != nil {
		t.Fatal(err)
	}
	return ks, src
}

func TestModuleParsesBackAndIsDeterministic(t *testing.T) {
	for name, sh := range kernels.SmallShapes() {
		ks, src := module(t, sh)
		if !strings.HasPrefix(src, llvm.Header+"\n") {
			t.Fatalf("%s: module does not start with the generated-code header", name)
		}
		m, err := asm.ParseString(name+".ll", src)
		if err != nil {
			t.Fatalf("%s: llir cannot parse the module back: %v", name, err)
		}
		if got, want := len(m.Funcs), 2*len(ks); got < want {
			t.Fatalf("%s: %d functions, want at least %d", name, got, want)
		}
		_, again := module(t, sh)
		if again != src {
			t.Fatalf("%s: two lowerings differ", name)
		}
	}
}

// library compiles the kernels of sh with clang and loads them.
func library(t testing.TB, sh kernels.Shape) ([]*kernels.Kernel, *llvmrt.Library) {
	t.Helper()
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang not on PATH: LLVM kernels cannot be compiled here")
	}
	ks, src := module(t, sh)
	dir := t.TempDir()
	ll, obj, so := filepath.Join(dir, "k.ll"), filepath.Join(dir, "k.o"), filepath.Join(dir, "libk.so")
	if err := os.WriteFile(ll, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := llvm.CompileObject(ctx, clang, ll, obj); err != nil {
		t.Fatal(err)
	}
	if err := llvm.LinkShared(ctx, clang, so, obj); err != nil {
		t.Fatal(err)
	}
	lib, err := llvmrt.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	return ks, lib
}

func TestKernelsAgreeWithReference(t *testing.T) {
	for name, sh := range kernels.SmallShapes() {
		t.Run(name, func(t *testing.T) {
			ks, lib := library(t, sh)
			// 37 tokens: not a multiple of any vector width.
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
					poison(k, got)
					if err := k.Ref(want); err != nil {
						t.Fatal(err)
					}
					if err := ck.Run(got, 3); err != nil {
						t.Fatal(err)
					}
					if err := kernels.Compare(k, got, want, tolerance); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

// poison fills pure outputs with NaN so that an element the kernel forgets to write
// fails the comparison.
func poison(k *kernels.Kernel, env kernels.Env) {
	for _, p := range k.Outputs() {
		if p.Access != kernels.Out {
			continue
		}
		if p.Elem == kernels.I32 {
			for i := range env.I[p.Name] {
				env.I[p.Name][i] = -7
			}
			continue
		}
		for i := range env.F[p.Name] {
			env.F[p.Name][i] = float32(math.NaN())
		}
	}
}

// TestVectorisesForAVX512 compiles the module for Skylake-AVX512 (whatever this CPU is)
// and checks that the row kernels use packed vector arithmetic on 256- or 512-bit
// registers: the IR is written so that LLVM's loop vectoriser applies.
func TestVectorisesForAVX512(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang not on PATH")
	}
	_, src := module(t, kernels.SmallShapes()["gelu"])
	dir := t.TempDir()
	ll, asmPath := filepath.Join(dir, "k.ll"), filepath.Join(dir, "k.s")
	if err := os.WriteFile(ll, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(clang, "-O3", "-march=skylake-avx512", "-Wno-override-module", "-S", "-o", asmPath, ll)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	text, err := os.ReadFile(asmPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"moe_rmsnorm_fwd", "moe_adamw", "moe_unpermute_fwd"} {
		body := string(text)
		start := strings.Index(body, fn+":")
		if start < 0 {
			t.Fatalf("no %s in the assembly", fn)
		}
		body = body[start:]
		if end := strings.Index(body, ".Lfunc_end"); end >= 0 {
			body = body[:end]
		}
		if !regexp.MustCompile(`v(fmadd|mul|add)[0-9a-z]*ps\s+%[yz]mm`).MatchString(body) {
			t.Errorf("%s: no packed ymm/zmm arithmetic", fn)
		}
	}
}
