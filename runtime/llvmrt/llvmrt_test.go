package llvmrt_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/llvm"
	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

func TestOpenMissingLibrary(t *testing.T) {
	if _, err := llvmrt.Open(filepath.Join(t.TempDir(), "nope.so")); err == nil {
		t.Fatal("opening a missing library succeeded")
	}
}

// TestRunChecksArguments: a short buffer or a missing scalar is an error before any C
// code runs, and a kernel missing from the library is reported by name.
func TestRunChecksArguments(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang not on PATH")
	}
	sh := kernels.SmallShapes()["gelu"]
	ks, err := kernels.Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	adam := kernels.Find(ks, "adamw")
	src, err := llvm.Module("rt", []*kernels.Kernel{adam})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ll, obj, so := filepath.Join(dir, "k.ll"), filepath.Join(dir, "k.o"), filepath.Join(dir, "k.so")
	if err := os.WriteFile(ll, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := llvm.CompileObject(context.Background(), clang, ll, obj); err != nil {
		t.Fatal(err)
	}
	if err := llvm.LinkShared(context.Background(), clang, so, obj); err != nil {
		t.Fatal(err)
	}
	lib, err := llvmrt.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if _, err := lib.Kernel(kernels.Find(ks, "xent_fwd")); err == nil || !strings.Contains(err.Error(), "xent_fwd") {
		t.Fatalf("missing kernel: err = %v", err)
	}
	k, err := lib.Kernel(adam)
	if err != nil {
		t.Fatal(err)
	}
	env := kernels.NewEnv()
	for _, s := range []string{"lr", "beta1", "beta2", "eps", "wd", "bc1", "bc2"} {
		env.S[s] = 0.5
	}
	env.S["numel"] = 100
	for _, b := range []string{"param", "grad", "adam_m", "adam_v"} {
		env.F[b] = make([]float32, 100)
	}
	env.F["adam_v"] = make([]float32, 99)
	if err := k.Run(env, 2); err == nil || !strings.Contains(err.Error(), "adam_v") {
		t.Fatalf("short buffer: err = %v", err)
	}
	env.F["adam_v"] = make([]float32, 100)
	delete(env.S, "lr")
	if err := k.Run(env, 2); err == nil || !strings.Contains(err.Error(), "lr") {
		t.Fatalf("missing scalar: err = %v", err)
	}
	env.S["lr"] = 0.5
	for i := range env.F["grad"] {
		env.F["grad"][i] = 1
	}
	if err := k.Run(env, 4); err != nil {
		t.Fatal(err)
	}
	want := env.Clone()
	want.F["param"], want.F["adam_m"], want.F["adam_v"] = make([]float32, 100), make([]float32, 100), make([]float32, 100)
	if err := adam.Ref(want); err != nil {
		t.Fatal(err)
	}
	// Every element was updated once, whatever range split the workers got.
	if env.F["adam_m"][0] != want.F["adam_m"][0] || env.F["adam_m"][99] != want.F["adam_m"][99] {
		t.Fatalf("m = %v, %v; want %v", env.F["adam_m"][0], env.F["adam_m"][99], want.F["adam_m"][0])
	}
}

// TestLoadSetChecksFingerprint: a library generated for one shape refuses to bind to the
// kernels of another.
func TestLoadSetChecksFingerprint(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang not on PATH")
	}
	build := func(sh kernels.Shape) ([]*kernels.Kernel, string) {
		ks, err := kernels.Set(sh)
		if err != nil {
			t.Fatal(err)
		}
		ks = []*kernels.Kernel{kernels.Find(ks, "rmsnorm_fwd"), kernels.Find(ks, "adamw")}
		src, err := llvm.Module("fp", ks)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		ll, obj, so := filepath.Join(dir, "k.ll"), filepath.Join(dir, "k.o"), filepath.Join(dir, "k.so")
		if err := os.WriteFile(ll, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := llvm.CompileObject(context.Background(), clang, ll, obj); err != nil {
			t.Fatal(err)
		}
		if err := llvm.LinkShared(context.Background(), clang, so, obj); err != nil {
			t.Fatal(err)
		}
		return ks, so
	}
	small := kernels.SmallShapes()["gelu"]
	wide := small
	wide.DModel *= 2
	ks, so := build(small)
	other, _ := build(wide)
	set, err := llvmrt.LoadSet(so, ks)
	if err != nil {
		t.Fatal(err)
	}
	set.Close()
	if _, err := llvmrt.LoadSet(so, other); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("a library for d_model %d bound to d_model %d kernels: %v", small.DModel, wide.DModel, err)
	}
}
