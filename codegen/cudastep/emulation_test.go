package cudastep

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/compilecache"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

// emulatedLibrary compiles driver.cpp (given in files with what it includes) under moec's
// CUDA emulation into a shared library, through the compile cache (a second test of the
// same sources loads the first one's library), loads it and closes it when the test ends.
// The emulation header and the clang prelude are added to files; flags are clang's beyond
// the common ones (an optimisation level, warnings). It skips the test without clang or
// when the library cannot be loaded.
func emulatedLibrary(t *testing.T, files map[string]string, flags ...string) *llvmrt.Library {
	t.Helper()
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH: the CUDA emulation needs it")
	}
	dir := t.TempDir()
	all := map[string]string{"moec_cpu_emu.h": cuda.EmulationHeader(), cuda.PreludeName: cuda.Prelude()}
	for n, text := range files {
		all[n] = text
	}
	var names []string
	for n, text := range all {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	args := slices.Concat([]string{"-std=c++17", "-fPIC", "-shared"}, flags, []string{"-include", "moec_cpu_emu.h", "-I", ".", "driver.cpp"})
	key, err := compilecache.Key(clang, args, dir, names)
	if err != nil {
		t.Fatal(err)
	}
	const lib = "libemulated.so"
	folder, err := compilecache.Open().Build(key, dir, func(into string) error {
		return compilecache.Run(context.Background(), dir, clang, append(args, "-o", filepath.Join(into, lib), "-lpthread")...)
	})
	if err != nil {
		t.Fatalf("compile the emulated kernels: %v", err)
	}
	l, err := llvmrt.Open(filepath.Join(folder, lib))
	if err != nil {
		t.Skipf("cannot load the emulation library: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
