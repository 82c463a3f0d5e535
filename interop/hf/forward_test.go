package hf

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestExportedLayoutComputesTheSame runs an independent torch implementation of the
// transformers classes (testdata/hf_forward.py, reading the exported folder with its own
// safetensors reader) and checks its logits against moec's runtime on the same weights:
// the names, shapes, orientation and config of the export mean to transformers what they
// mean to moec.
func TestExportedLayoutComputesTheSame(t *testing.T) {
	py := torchPython(t)
	withTransformers := exec.Command(py, "-c", "import transformers").Run() == nil // once: each import costs seconds
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128}
	var idText []string
	for _, id := range ids {
		idText = append(idText, fmt.Sprint(id))
	}
	for _, name := range []string{"tiny_mixtral", "tiny_llama", "tiny_qwen3_moe", "tiny_olmoe", "tiny_olmoe_clip", "tiny_qwen2_moe",
		"tiny_llama_yarn", "tiny_llama_llama3", "tiny_llama_linear", "tiny_arctic", "tiny_arctic_every2"} {
		t.Run(name, func(t *testing.T) {
			m := tinyModel(t, name)
			dir, _ := saveCheckpoint(t, m)
			out := filepath.Join(t.TempDir(), "hf")
			if _, err := Export(dir, out); err != nil {
				t.Fatal(err)
			}
			net := tinyNet(t, m) // the weights saveCheckpoint wrote
			want, err := net.Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// hf_forward.py rotates by the plain frequencies; the scaled models are checked
			// against transformers alone.
			if m.RopeScaling == nil {
				compareLogits(t, py, "hf_forward.py", out, strings.Join(idText, ","), want)
			}
			// transformers itself, where it is installed.
			if withTransformers {
				compareLogits(t, py, "hf_transformers.py", out, strings.Join(idText, ","), want)
			} else {
				t.Log("transformers not installed: AutoModelForCausalLM check skipped")
			}
		})
	}
}

// torchPython is the interpreter with torch: $MOEC_PEER_PYTHON, else the project venv
// where it has torch and transformers, else Debian's python3 (as runtime/nn's PyTorch
// peer). It skips the test when none imports torch.
func torchPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("MOEC_PEER_PYTHON")
	if venv := filepath.Join("..", "..", ".venv", "bin", "python"); py == "" && exec.Command(venv, "-c", "import torch, transformers").Run() == nil {
		py = venv // make venv's: Debian's torch beside transformers from PyPI
	}
	if py == "" {
		py = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			py = "/usr/bin/python3"
		}
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("torch reference skipped: %s cannot import torch: %s", py, out)
	}
	return py
}

// compareLogits runs testdata/script on the exported folder and checks its logits against
// moec's. The check is relative to the logits' own scale so it means the same whatever the
// initialisation's magnitude; moec computes in float32, the references in float64.
func compareLogits(t *testing.T, py, script, folder, ids string, want []float32) {
	t.Helper()
	b, err := exec.Command(py, filepath.Join("testdata", script), folder, ids).Output()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		// hf_transformers.py: the installed transformers has no class for the family.
		t.Logf("%s: not checked: %s", script, strings.TrimSpace(string(ee.Stderr)))
		return
	}
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s", script, err, stderr)
	}
	var got []float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, moec %d", script, len(got), len(want))
	}
	scale, worst := 0.0, 0.0
	for i := range got {
		scale = math.Max(scale, math.Abs(got[i]))
		worst = math.Max(worst, math.Abs(got[i]-float64(want[i])))
	}
	if scale == 0 || worst > 1e-5*scale {
		t.Errorf("%s: logits differ: worst %.3g at scale %.3g", script, worst, scale)
	}
	t.Logf("%s: %d logits agree within %.2g of %.2g", script, len(got), worst, scale)
}
