package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/kernels"
)

// TestPrepare builds the whole GPU check with a small bench shape and compiles every
// harness and kernel file to PTX with clang, so the nvcc run on a GPU machine starts
// from sources that are known to compile.
func TestPrepare(t *testing.T) {
	out := t.TempDir()
	sh := benchShape()
	sh.DModel, sh.Hidden, sh.RouterDim, sh.Experts = 64, 32, 64, 8
	if err := prepare(config{out: out, tokens: 13, benchTokens: 100, reps: 2, bench: sh}); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(out, "*"))
	if len(dirs) != 4 {
		t.Fatalf("want 3 check dirs and bench, have %v", dirs)
	}
	// Every check case has input and expected-output files of the sizes the harness reads.
	ks, _ := kernels.Set(kernels.SmallShapes()["swiglu"])
	for _, k := range ks {
		for _, ext := range []string{".in", ".want"} {
			if _, err := os.Stat(filepath.Join(out, "check_swiglu", "data", k.Name+ext)); err != nil {
				t.Fatal(err)
			}
		}
	}
	src, err := os.ReadFile(filepath.Join(out, "bench", "moe_check.cu"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range benchKernels() {
		if !strings.Contains(string(src), "moe_launch_"+k+"(") {
			t.Errorf("bench harness does not launch %s", k)
		}
	}
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++: harness not compiled")
	}
	for _, d := range dirs {
		// The harness and kernels compile; the harness's includes resolve from cuda/.
		for _, f := range []string{filepath.Join(d, "cuda", "moe_kernels.cu")} {
			if _, err := cuda.CompilePTX(context.Background(), clang, f, "sm_80"); err != nil {
				t.Fatal(err)
			}
		}
		harness := filepath.Join(d, "cuda", "moe_check.cu")
		data, _ := os.ReadFile(filepath.Join(d, "moe_check.cu"))
		if err := os.WriteFile(harness, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := cuda.CompilePTX(context.Background(), clang, harness, "sm_80"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHarnessRunsUnderEmulation compiles the harnesses (make test: the gelu shape's and the
// bench; make test-long: every one) with their kernels as C++ under the
// CPU emulation of CUDA and runs it on the prepared data: the whole GPU check (file
// layout, offsets, launch arguments, comparisons, the bench pipeline) runs here, so only
// nvcc and the GPU itself are new on a CUDA machine.
func TestHarnessRunsUnderEmulation(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH")
	}
	out := t.TempDir()
	sh := benchShape()
	sh.DModel, sh.Hidden, sh.RouterDim, sh.Experts = 64, 32, 64, 8
	if err := prepare(config{out: out, tokens: 13, benchTokens: 100, reps: 1, bench: sh}); err != nil {
		t.Fatal(err)
	}
	emu := filepath.Join(out, "moec_cpu_emu.h")
	if err := os.WriteFile(emu, []byte(cuda.EmulationHeader()), 0o644); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(out, "*", "moe_check.cu"))
	if len(dirs) != 4 {
		t.Fatalf("harnesses: %v", dirs)
	}
	for _, src := range dirs {
		d := filepath.Dir(src)
		if name := filepath.Base(d); (name == "check_swiglu" || name == "check_token") && !longtest.On() {
			// codegen/cuda's TestEmulatedCUDAAgreesWithReference runs these shapes' kernels
			// under the same emulation; the gelu harness and the bench stay.
			t.Logf("%s: left to make test-long (%s=1): about 20 s of compiling", name, longtest.Env)
			continue
		}
		bin := filepath.Join(d, "moe_check_emu")
		cmd := exec.Command(clang, "-std=c++17", "-O1", "-include", emu, "-I", filepath.Join(d, "cuda"), "-x", "c++",
			src, filepath.Join(d, "cuda", "moe_kernels.cu"), filepath.Join(d, "cuda", "moe_host.cu"), "-o", bin, "-lpthread")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", d, err, msg)
		}
		msg, err := exec.Command(bin, filepath.Join(d, "data")).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(d), err, msg)
		}
		text := string(msg)
		if !strings.Contains(text, "0 kernel(s) failed") {
			t.Fatalf("%s:\n%s", filepath.Base(d), text)
		}
		if filepath.Base(d) == "bench" && !strings.Contains(text, "bench moec moe_layer_total") {
			t.Fatalf("bench printed no timing:\n%s", text)
		}
		if strings.HasPrefix(filepath.Base(d), "check_") && strings.Count(text, "ok   ") < 20 {
			t.Fatalf("%s: too few kernels checked:\n%s", filepath.Base(d), text)
		}
	}
}
