package cudastep

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/compilecache"
)

// globalSignatures reads every __global__ function of a CUDA source: its name and its
// parameters' C types in order (const and __restrict__ dropped: they do not change how a
// launch passes the argument).
func globalSignatures(t *testing.T, src string) map[string][]string {
	t.Helper()
	re := regexp.MustCompile(`__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)`)
	out := map[string][]string{}
	for _, m := range re.FindAllStringSubmatch(src, -1) {
		var types []string
		for _, p := range strings.Split(m[2], ",") {
			p = strings.TrimSpace(p)
			if p == "" || p == "void" {
				continue
			}
			p = strings.NewReplacer("const ", "", "__restrict__", "", "__restrict", "").Replace(p)
			i := strings.LastIndexAny(p, " *")
			typ := strings.Join(strings.Fields(strings.ReplaceAll(p[:i+1], "*", " * ")), " ")
			types = append(types, strings.ReplaceAll(typ, " *", "*"))
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("kernel %s is defined twice", m[1])
		}
		out[m[1]] = types
	}
	return out
}

// TestKernelTablesMatchSources holds every kernels_*.cu of the package to its Go table in
// Library(): the same __global__ functions, with the same parameter types in order, named
// with the file's prefix, each file embedded as it is on disk.
func TestKernelTablesMatchSources(t *testing.T) {
	paths, err := filepath.Glob("kernels_*.cu")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no kernel files: %v", err)
	}
	files := map[string]KernelFile{}
	for _, f := range Library() {
		files[f.Name] = f
	}
	for _, path := range paths {
		f, ok := files[path]
		if !ok {
			t.Errorf("%s is not in Library()", path)
			continue
		}
		disk, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(disk) != f.Source {
			t.Errorf("%s: the embedded source differs from the file", path)
		}
		if !strings.HasPrefix(afterComments(string(disk)), `#include "moec_step_device.h"`) {
			t.Errorf("%s does not start (after its comments) by including moec_step_device.h", path)
		}
		prefix := fileBase(f) + "_"
		sigs := globalSignatures(t, f.Source)
		for _, k := range f.Kernels {
			if !strings.HasPrefix(k.Name, prefix) {
				t.Errorf("%s: kernel %s lacks the file's prefix %s", path, k.Name, prefix)
			}
			got, ok := sigs[k.Name]
			if !ok {
				t.Errorf("%s: the table's kernel %s is not in the source", path, k.Name)
				continue
			}
			var want []string
			for _, p := range k.Params {
				want = append(want, p.CType())
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: %s takes (%s), its table says (%s)", path, k.Name, strings.Join(got, ", "), strings.Join(want, ", "))
			}
			delete(sigs, k.Name)
		}
		for name := range sigs {
			t.Errorf("%s: __global__ %s is missing from its table", path, name)
		}
	}
}

// afterComments is src from its first line that is neither blank nor a // comment.
func afterComments(src string) string {
	for src != "" {
		line, rest, _ := strings.Cut(src, "\n")
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "//") {
			return src
		}
		src = rest
	}
	return ""
}

// TestMangledName holds MangledName to clang's symbols (pointer types substituted).
func TestMangledName(t *testing.T) {
	for _, c := range []struct {
		k    Kernel
		want string
	}{
		{Kernel{"dense_copy", []ParamKind{PtrF32, PtrF32, I64}}, "_Z10dense_copyPfS_x"},
		{Kernel{"k2", []ParamKind{PtrI32, PtrF32, PtrU16, PtrI32, PtrF32, PtrU16, I32, I64, F32}}, "_Z2k2PiPfPtS_S0_S1_ixf"},
	} {
		if got := MangledName(c.k); got != c.want {
			t.Errorf("%s: %s, clang says %s", c.k.Name, got, c.want)
		}
	}
}

// TestKernelsCompileToPTX compiles every kernel file to PTX for sm_80 and sm_90 with clang
// and no CUDA SDK (warnings are errors), and finds each table kernel's entry point.
func TestKernelsCompileToPTX(t *testing.T) {
	for _, f := range Library() {
		for _, arch := range []string{"sm_80", "sm_90"} {
			ptx := libraryPTX(t, f.Name, arch)
			// The host program finds a kernel by its name (extern "C") or by the C++ symbol
			// of the table's parameter types.
			for _, k := range f.Kernels {
				entry := `\.entry\s+(` + k.Name + `|` + MangledName(k) + `)\(`
				if !regexp.MustCompile(entry).MatchString(ptx) {
					t.Errorf("%s for %s: no entry point %s or %s", f.Name, arch, k.Name, MangledName(k))
				}
			}
		}
	}
}

// libraryPTX is the PTX clang makes of the kernel library's file name for arch (as the
// host program's PTXArgs compile it, next to the prelude and the device header), through
// the compile cache: the PTX tests of one file share one compile. It skips the test when
// there is no clang.
func libraryPTX(t *testing.T, name, arch string) string {
	t.Helper()
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH: PTX needs clang 16 or newer")
	}
	dir := t.TempDir()
	files := map[string]string{cuda.PreludeName: cuda.Prelude(), DeviceHeaderName: deviceHeader}
	for _, f := range Library() {
		files[f.Name] = f.Source
	}
	if _, ok := files[name]; !ok {
		t.Fatalf("the kernel library has no %s", name)
	}
	for n, text := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := strings.TrimSuffix(name, ".cu") + "." + arch + ".ptx"
	key, err := compilecache.Key(clang, PTXArgs(arch, name, out), dir, []string{name, cuda.PreludeName, DeviceHeaderName})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := compilecache.Open().Build(key, dir, func(into string) error {
		return compilecache.Run(context.Background(), dir, clang, PTXArgs(arch, name, filepath.Join(into, out))...)
	})
	if err != nil {
		t.Fatalf("%s for %s: %v", name, arch, err)
	}
	ptx, err := os.ReadFile(filepath.Join(folder, out))
	if err != nil {
		t.Fatal(err)
	}
	return string(ptx)
}
