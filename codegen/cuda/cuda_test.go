package cuda_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/kernels"
)

// write generates the CUDA files of sh into a temporary directory.
func write(t *testing.T, sh kernels.Shape) (string, []*kernels.Kernel) {
	t.Helper()
	ks, err := kernels.Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	src, err := cuda.Source("test", ks)
	if err != nil {
		t.Fatal(err)
	}
	host, err := cuda.Host("test", ks)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, text := range map[string]string{"moe_kernels.cu": src, "moe_host.cu": host,
		"moe_kernels.h": cuda.HeaderFile("test", sh, ks), cuda.PreludeName: cuda.Prelude()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, ks
}

// entry returns the PTX of one kernel function.
func entry(t *testing.T, ptx, kernel string) string {
	t.Helper()
	start := strings.Index(ptx, ".entry moe_"+kernel+"(")
	if start < 0 {
		t.Fatalf("PTX has no entry for %s", kernel)
	}
	rest := ptx[start+1:]
	if end := strings.Index(rest, ".entry "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

func TestPTXForSM80AndSM90(t *testing.T) {
	clang := cuda.FindClang()
	if clang == "" {
		t.Skip("no clang++ on PATH: cannot compile CUDA to PTX here")
	}
	shapes := kernels.SmallShapes()
	for _, name := range []string{"swiglu", "token"} {
		dir, ks := write(t, shapes[name])
		for _, arch := range []string{"sm_80", "sm_90"} {
			ptx, err := cuda.CompilePTX(context.Background(), clang, filepath.Join(dir, "moe_kernels.cu"), arch)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(ptx, ".target "+arch) {
				t.Errorf("%s/%s: PTX does not target %s", name, arch, arch)
			}
			for _, k := range ks {
				entry(t, ptx, k.Name)
			}
			// The router keeps its top-k selection in registers: no local memory.
			if r := entry(t, ptx, "router_fwd"); strings.Contains(r, ".local") {
				t.Errorf("%s/%s: router_fwd uses local memory", name, arch)
			}
			// Row-wise kernels read rows with 128-bit loads.
			for _, k := range []string{"rmsnorm_fwd", "unpermute_fwd", "permute_fwd"} {
				if !strings.Contains(entry(t, ptx, k), "ld.global.v4.f32") {
					t.Errorf("%s/%s: %s has no ld.global.v4.f32", name, arch, k)
				}
			}
			// The expert GEMMs are tiled: shared-memory staging with block barriers, and
			// the micro-tile reads its operands from shared memory four floats at a time.
			for _, k := range []string{"router_logits", "router_w_grad", "router_in_grad", "expert_up_fwd", "expert_down_fwd",
				"expert_down_bwd", "expert_up_bwd", "expert_w1_grad", "expert_w2_grad"} {
				e := entry(t, ptx, k)
				for _, want := range []string{"bar.sync", "st.shared.f32", "ld.shared.v4.f32", "fma.rn.f32"} {
					if !strings.Contains(e, want) {
						t.Errorf("%s/%s: tiled %s has no %s", name, arch, k, want)
					}
				}
			}
			// Device exp is the hardware approximation, not a libm call.
			if !regexp.MustCompile(`ex2\.approx`).MatchString(entry(t, ptx, "xent_fwd")) {
				t.Errorf("%s/%s: xent_fwd does not use ex2.approx", name, arch)
			}
			if _, err := cuda.CompilePTX(context.Background(), clang, filepath.Join(dir, "moe_host.cu"), arch); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSourceIsDeterministicAndHeadered(t *testing.T) {
	sh := kernels.SmallShapes()["gelu"]
	ks, err := kernels.Set(sh)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cuda.Source("x", ks)
	if err != nil {
		t.Fatal(err)
	}
	ks2, _ := kernels.Set(sh)
	b, _ := cuda.Source("x", ks2)
	if a != b {
		t.Fatal("two lowerings differ")
	}
	host, _ := cuda.Host("x", ks)
	for _, text := range []string{a, host, cuda.HeaderFile("x", sh, ks)} {
		if !strings.HasPrefix(text, cuda.Header+"\n") {
			t.Fatalf("file does not start with %q", cuda.Header)
		}
	}
}
