package gpu

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/internal/compilecache"
)

// TestEmulationObjectsSharedBetweenPrograms: two programs whose emulations compile
// different sets of sources share the object of the source they have in common (one
// compile-cache entry per source, not per set), and a changed header compiles it again, as
// does a changed kernel file the source includes (an emulation trampoline's kernels_*.cu,
// whose edits leave the trampoline's text alone).
func TestEmulationObjectsSharedBetweenPrograms(t *testing.T) {
	needClang(t)
	t.Setenv(compilecache.Env, t.TempDir())
	clang := cuda.FindClang()
	write := func(dir string, files map[string]string) {
		t.Helper()
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var programWith func(header, kernel string, sources ...string) map[string]string
	program := func(header string, sources ...string) map[string]string {
		return programWith(header, "static int kernel(void) { return 5; }\n", sources...)
	}
	programWith = func(header, kernel string, sources ...string) map[string]string {
		dir := t.TempDir()
		write(dir, map[string]string{"moec_cpu_emu.h": "", "shared.h": header, "kernels_k.cu": kernel,
			"trampoline.cpp": "#include \"kernels_k.cu\"\nint trampoline(void) { return kernel(); }\n",
			"common.cpp":     "#include \"shared.h\"\nint common(void) { return SHARED; }\n",
			"dense.cpp":      "int dense(void) { return 1; }\n", "moe.cpp": "int moe(void) { return 2; }\n"})
		objs, err := emulationObjects(context.Background(), dir, clang, cudastep.EmulationFlags(), sources)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != len(sources) {
			t.Fatalf("%d objects for %d sources", len(objs), len(sources))
		}
		out := map[string]string{}
		for i, src := range sources {
			if _, err := os.Stat(objs[i]); err != nil {
				t.Fatalf("object of %s: %v", src, err)
			}
			out[src] = objs[i]
		}
		return out
	}
	first := program("#define SHARED 3\n", "common.cpp", "dense.cpp")
	second := program("#define SHARED 3\n", "moe.cpp", "common.cpp")
	if first["common.cpp"] != second["common.cpp"] {
		t.Errorf("the common source compiled twice: %s and %s", first["common.cpp"], second["common.cpp"])
	}
	if first["dense.cpp"] == second["moe.cpp"] {
		t.Errorf("two sources share one object %s", first["dense.cpp"])
	}
	if changed := program("#define SHARED 4\n", "common.cpp"); changed["common.cpp"] == first["common.cpp"] {
		t.Errorf("a changed header kept the old object %s", changed["common.cpp"])
	}
	old := program("#define SHARED 3\n", "trampoline.cpp")
	if again := program("#define SHARED 3\n", "trampoline.cpp"); again["trampoline.cpp"] != old["trampoline.cpp"] {
		t.Errorf("the same trampoline compiled twice: %s and %s", old["trampoline.cpp"], again["trampoline.cpp"])
	}
	edited := programWith("#define SHARED 3\n", "static int kernel(void) { return 6; }\n", "trampoline.cpp")
	if edited["trampoline.cpp"] == old["trampoline.cpp"] {
		t.Errorf("an edited kernel file kept its trampoline's old object %s", old["trampoline.cpp"])
	}
}
