package safetensors

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPythonReadsOurFiles has an independent reader (testdata/read.py, written from the
// format description with Python's json and struct) parse a file we wrote.
func TestPythonReadsOurFiles(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	ts := []Tensor{
		{Name: "model.embed_tokens.weight", Shape: []int{3, 2}, Data: []float32{1, -2, 3.5, 0, 0.125, -0.25}},
		{Name: "lm_head.weight", Shape: []int{2}, Data: []float32{7, 8}},
		{Name: "scalar", Shape: []int{}, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 4}, Data: []float32{}},
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	b, err := Encode(ts, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, b, 0o644)
	out, err := exec.Command(py, "testdata/read.py", path).CombinedOutput()
	if err != nil {
		t.Fatalf("read.py: %v\n%s", err, out)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("read.py output %q: %v", out, err)
	}
	for _, ts := range ts {
		var e struct {
			Shape []int
			Sum   float64
		}
		json.Unmarshal(got[ts.Name], &e)
		var sum float64
		for _, v := range ts.Data {
			sum += float64(v)
		}
		if len(e.Shape) != len(ts.Shape) || e.Sum != sum {
			t.Errorf("%s: python read shape %v sum %v, want %v %v", ts.Name, e.Shape, e.Sum, ts.Shape, sum)
		}
	}
}
