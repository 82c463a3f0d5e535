package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestExportedLayoutComputesTheSame runs an independent torch implementation of the
// transformers classes (testdata/hf_forward.py, reading the exported folder with its own
// safetensors reader) and checks its logits against moec's runtime on the same weights:
// the names, shapes, orientation and config of the export mean to transformers what they
// mean to moec.
func TestExportedLayoutComputesTheSame(t *testing.T) {
	py, withTransformers := torchTransformers(t)
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128}
	var idText []string
	for _, id := range ids {
		idText = append(idText, fmt.Sprint(id))
	}
	// Every model's export and moec's logits first, then every reference in one
	// interpreter (testdata/batch.py): one torch import, not 22.
	var checks logitChecks
	folders := t.TempDir()
	for _, name := range []string{"tiny_mixtral", "tiny_llama", "tiny_qwen3_moe", "tiny_olmoe", "tiny_olmoe_clip", "tiny_qwen2_moe",
		"tiny_llama_yarn", "tiny_llama_llama3", "tiny_llama_linear", "tiny_arctic", "tiny_arctic_every2"} {
		m := tinyModel(t, name)
		dir, _ := saveCheckpoint(t, m)
		out := filepath.Join(folders, name)
		if _, err := Export(dir, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		net := tinyNet(t, m) // the weights saveCheckpoint wrote
		want, err := net.Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// hf_forward.py rotates by the plain frequencies; the scaled models are checked
		// against transformers alone.
		if m.RopeScaling == nil {
			checks.add(name+"_hf_forward", "hf_forward.py", out, strings.Join(idText, ","), want)
		}
		// transformers itself, where it is installed.
		if withTransformers {
			checks.add(name+"_transformers", "hf_transformers.py", out, strings.Join(idText, ","), want)
		}
	}
	if !withTransformers {
		t.Log("transformers not installed: AutoModelForCausalLM checks skipped")
	}
	checks.run(t, py)
}

// logitChecks gathers reference scripts' runs on exported folders, to run them all in one
// interpreter (runBatch) and hold each to moec's logits (checkLogits) as its own subtest.
type logitChecks struct {
	names []string
	jobs  []batchJob
	wants [][]float32
}

// add queues script on folder with the token ids, held to want, as subtest name.
func (c *logitChecks) add(name, script, folder, ids string, want []float32) {
	c.names = append(c.names, name)
	c.jobs = append(c.jobs, batchJob{Script: script, Folder: folder, IDs: ids})
	c.wants = append(c.wants, want)
}

// run runs every queued script in one interpreter and checks each result.
func (c *logitChecks) run(t *testing.T, py string) {
	t.Helper()
	if len(c.jobs) == 0 {
		return
	}
	results := runBatch(t, py, c.jobs)
	for i, r := range results {
		t.Run(c.names[i], func(t *testing.T) {
			checkLogits(t, c.jobs[i].Script, []byte(r.Stdout), r.Status, r.Stderr, c.wants[i])
		})
	}
}

// batchJob is one reference script's run on an exported folder and token ids.
type batchJob struct {
	Script, Folder, IDs string
}

// batchResult is what a script printed and its exit status.
type batchResult struct {
	Stdout, Stderr string
	Status         int
}

// runBatch runs jobs in one interpreter (testdata/batch.py) and returns their results in
// order.
func runBatch(t *testing.T, py string, jobs []batchJob) []batchResult {
	t.Helper()
	var in [][3]string
	for _, j := range jobs {
		in = append(in, [3]string{filepath.Join("testdata", j.Script), j.Folder, j.IDs})
	}
	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "batch.py"))
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("batch.py: %v\n%s", err, stderr.Bytes())
	}
	var raw []struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("batch.py: %v\n%s", err, out)
	}
	if len(raw) != len(jobs) {
		t.Fatalf("batch.py: %d results for %d jobs", len(raw), len(jobs))
	}
	res := make([]batchResult, len(raw))
	for i, r := range raw {
		res[i] = batchResult{Stdout: r.Stdout, Stderr: r.Stderr, Status: r.Status}
	}
	return res
}

// torchPython is the interpreter with torch: $MOEC_PEER_PYTHON, else the project venv
// where it has torch and transformers, else Debian's python3 (as runtime/nn's PyTorch
// peer). It skips the test when none imports torch.
func torchPython(t *testing.T) string {
	py, _ := torchTransformers(t)
	return py
}

// torchTransformers is torchPython and whether that interpreter also imports transformers.
// The package's tests probe once (findTorchPython): each import costs seconds of CPU.
func torchTransformers(t *testing.T) (py string, withTransformers bool) {
	t.Helper()
	found := findTorchPython()
	if found.why != "" {
		t.Skip(found.why)
	}
	return found.py, found.transformers
}

// foundPython is findTorchPython's answer: the interpreter and whether it imports
// transformers, or why there is none.
type foundPython struct {
	py, why      string
	transformers bool
}

// findTorchPython is torchTransformers' probe, run once for the package.
var findTorchPython = sync.OnceValue(func() foundPython {
	py := os.Getenv("MOEC_PEER_PYTHON")
	if venv := filepath.Join("..", "..", ".venv", "bin", "python"); py == "" && exec.Command(venv, "-c", "import torch, transformers").Run() == nil {
		return foundPython{py: venv, transformers: true} // make venv's: Debian's torch beside transformers from PyPI
	}
	if py == "" {
		py = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			py = "/usr/bin/python3"
		}
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		return foundPython{why: fmt.Sprintf("torch reference skipped: %s cannot import torch: %s", py, out)}
	}
	return foundPython{py: py, transformers: exec.Command(py, "-c", "import transformers").Run() == nil}
})

// compareLogits runs testdata/script on the exported folder and checks its logits against
// moec's. The check is relative to the logits' own scale so it means the same whatever the
// initialisation's magnitude; moec computes in float32, the references in float64.
func compareLogits(t *testing.T, py, script, folder, ids string, want []float32) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(py, filepath.Join("testdata", script), folder, ids)
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	status := 0
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	checkLogits(t, script, b, status, stderr.String(), want)
}

// checkLogits holds the logits a reference script printed (as JSON) to moec's; status 3
// means the installed transformers has no class for the family (hf_transformers.py) and
// leaves the check out, saying so.
func checkLogits(t *testing.T, script string, out []byte, status int, stderr string, want []float32) {
	t.Helper()
	if status == 3 {
		t.Logf("%s: not checked: %s", script, strings.TrimSpace(stderr))
		return
	}
	if status != 0 {
		t.Fatalf("%s: exit status %d\n%s", script, status, stderr)
	}
	var got []float64
	if err := json.Unmarshal(out, &got); err != nil {
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
