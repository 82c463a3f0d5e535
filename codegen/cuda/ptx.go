package cuda

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// FindClang returns the first clang++ on PATH that can compile CUDA to PTX, or "".
func FindClang() string {
	for _, name := range []string{"clang++", "clang++-19", "clang++-18", "clang++-17", "clang++-16", "clang++-15", "clang++-14"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// CompilePTX compiles the CUDA file src (which must sit next to moe_kernels.h and the
// prelude) for the given GPU architecture (e.g. "sm_90") with clang, device side only,
// without a CUDA SDK, and returns the PTX.
func CompilePTX(ctx context.Context, clang, src, arch string) (string, error) {
	dir := filepath.Dir(src)
	out, err := os.CreateTemp("", "moec-*.ptx")
	if err != nil {
		return "", err
	}
	out.Close()
	defer os.Remove(out.Name())
	cmd := exec.CommandContext(ctx, clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch="+arch,
		"-nocudainc", "-nocudalib", "-include", filepath.Join(dir, PreludeName), "-I", dir,
		"-O3", "-Wall", "-Werror", "-Wno-unused-variable", "-Wno-unknown-cuda-version", "-S", "-o", out.Name(), src)
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("clang CUDA %s for %s: %w\n%s", filepath.Base(src), arch, err, msg.Bytes())
	}
	ptx, err := os.ReadFile(out.Name())
	return string(ptx), err
}
