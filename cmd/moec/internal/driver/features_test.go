package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/lang/diag"
)

const groupsMoe = `model grouped {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 2; groups = 2; topk_groups = 1; capacity_factor = 1.25 }
}
cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }
train grouped on local {
  tokens_per_batch = 256; micro_batch = 4; precision = fp32
  optimizer = adamw { lr = 3e-3 }
  data = "text/*.txt"
  stage one { steps = 20 }
  stage two from one { steps = 20 }
}
`

// TestBuildWarnsOfKernelGaps: the generated router ignores node-limited routing and the
// capacity factor, so moec build warns (W9501, at the stage) that the CUDA and LLVM kernels
// do not honour them, once per train, and still writes the kernels.
func TestBuildWarnsOfKernelGaps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grouped.moe")
	if err := os.WriteFile(path, []byte(groupsMoe), 0o644); err != nil {
		t.Fatal(err)
	}
	l := driver.Load(path)
	if l.Diags.HasErrors() {
		t.Fatalf("grouped.moe does not check: %v", l.Diags.Err())
	}
	res, diags, err := driver.Build(l, driver.BuildOptions{OutRoot: filepath.Join(dir, "out")})
	if err != nil || diags.HasErrors() {
		t.Fatalf("%v %v", err, diags.Err())
	}
	found := map[string]int{}
	for _, d := range diags {
		if d.Code != diag.CodeBackendGap {
			continue
		}
		if d.Severity != diag.Warning || d.Subject.Start.Line != 12 {
			t.Errorf("%s: severity %v at line %d, want a warning at stage one (line 12)", d.Summary, d.Severity, d.Subject.Start.Line)
		}
		for _, f := range []string{"node-limited routing", "capacity factor"} {
			if strings.Contains(d.Summary, f) && strings.Contains(d.Summary, "CUDA kernels") && strings.Contains(d.Summary, "LLVM kernels") {
				found[f]++
			}
		}
	}
	for _, f := range []string{"node-limited routing", "capacity factor"} {
		if found[f] != 1 {
			t.Errorf("%d warnings name %s and both kernel backends, want 1: %v", found[f], f, diags)
		}
	}
	if _, err := os.Stat(filepath.Join(res.OutDir, "two", "cuda", "moe_kernels.cu")); err != nil {
		t.Errorf("the kernels were not written: %v", err)
	}
}
