package driver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/internal/longtest"
)

// TestBuildWritesTheCUDAStep: every stage's output holds its step program lowered to
// CUDA (cuda-step/: the host program, the kernel files and a Makefile over them); with
// MOEC_LONG_EMULATION=1 the Makefile builds the host library for a GPU, compiles every
// kernel file to PTX for sm_80 and sm_90 and links the emulated library with clang.
func TestBuildWritesTheCUDAStep(t *testing.T) {
	dir, l := loadTiny(t)
	res, diags, err := driver.Build(l, driver.BuildOptions{OutRoot: filepath.Join(dir, "out")})
	if err != nil || diags.HasErrors() {
		t.Fatalf("build: %v %v", err, diags.Err())
	}
	for _, note := range res.Notes {
		if strings.Contains(note, driver.CUDAStepDir) {
			t.Errorf("a note on the CUDA step: %s", note)
		}
	}
	var stepDir string
	for _, stage := range []string{"dense", "moe"} {
		stepDir = filepath.Join(res.OutDir, stage, driver.CUDAStepDir)
		for _, f := range []string{"Makefile", cudastep.HostName, "kernels_moe.cu", cudastep.DriverDlopenName, cuda.PreludeName} {
			if _, err := os.Stat(filepath.Join(stepDir, f)); err != nil {
				t.Errorf("stage %s: %v", stage, err)
			}
		}
	}
	host, err := os.ReadFile(filepath.Join(stepDir, cudastep.HostName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(host), "moec_run_ops") {
		t.Fatalf("the moe stage's host program runs no ops")
	}
	clang := cuda.FindClang()
	mk, err := exec.LookPath("make")
	if clang == "" || err != nil {
		t.Skip("clang++ or make not found: the Makefile's commands are not run")
	}
	if !longtest.On() {
		t.Skip("set MOEC_LONG_EMULATION=1 to run the Makefile (the host library, every kernel file's PTX and the emulated library: over a minute)")
	}
	targets := []string{"host", "ptx", "emulated"}
	for _, target := range targets {
		cmd := exec.Command(mk, "-j2", "CLANG="+clang, target)
		cmd.Dir = stepDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	want := []string{cudastep.HostLibrary, "kernels_mma.sm_90.ptx", "kernels_moe.sm_80.ptx", cudastep.EmulatedLibrary}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(stepDir, f)); err != nil {
			t.Errorf("after make %s: %v", strings.Join(targets, " "), err)
		}
	}
}
