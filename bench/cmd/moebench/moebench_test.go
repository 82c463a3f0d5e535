package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestTrainFLOPs pins the count the GFLOP/s row divides by, worked out by hand for the
// benchmark model: per layer q,k,v,o 4·256·256 + attention 2·256·129/2 + router 256·8 +
// two experts 2·3·256·512, four layers, head 256·256; ×2 per multiply-add, ×3 for training.
func TestTrainFLOPs(t *testing.T) {
	perLayer := 4*256*256 + 2*256*129/2 + 256*8 + 2*3*256*512
	want := 3 * 2 * float64(4*perLayer+256*256)
	if got := trainFLOPsPerToken(benchModel()); got != want {
		t.Fatalf("train FLOPs per token = %v, want %v", got, want)
	}
}

func TestSpanOf(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want span
	}{
		{nil, span{}},
		{[]float64{3}, span{3, 3, 3}},
		{[]float64{5, 1, 3}, span{1, 3, 5}},
		{[]float64{4, 1, 2, 10}, span{1, 3, 10}},
	} {
		if got := spanOf(c.in); got != c.want {
			t.Errorf("spanOf(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestRatiosArePairwise: repetition i of moec is divided by repetition i of PyTorch, the
// run it was interleaved with, not by PyTorch's median.
func TestRatiosArePairwise(t *testing.T) {
	r := row{Moec: []float64{10, 20, 30}, Torch: []float64{5, 20, 0}}
	if diff := cmp.Diff([]float64{2, 1}, r.ratios()); diff != "" {
		t.Fatalf("ratios (-want +got):\n%s", diff)
	}
}

func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		r    row
		want string
	}{
		{row{Moec: []float64{4, 5}, Torch: []float64{2, 2}, Target: 2}, "met"},
		{row{Moec: []float64{3, 3}, Torch: []float64{2, 2}, Target: 2}, "**missed**"},
		{row{Moec: []float64{90}, Torch: []float64{100}, Target: 1, Ceiling: true}, "met"},
		{row{Moec: []float64{110}, Torch: []float64{100}, Target: 1, Ceiling: true}, "**missed**"},
		{row{Moec: []float64{0.7}, Target: 0.6, Single: true}, "met"},
		{row{Moec: []float64{0.5}, Target: 0.6, Single: true}, "**missed**"},
		{row{Moec: []float64{1}, Torch: []float64{1}}, ""},
	} {
		if got := c.r.verdict(); got != c.want {
			t.Errorf("%+v: verdict %q, want %q", c.r, got, c.want)
		}
	}
}

func TestCoretypes(t *testing.T) {
	if diff := cmp.Diff([]string{"default", "SkylakeX"}, coretypes("auto", true)); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"default", "Haswell"}, coretypes("auto", false)); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"Zen"}, coretypes("Zen", false)); diff != "" {
		t.Error(diff)
	}
}

// TestTableGolden fixes the Markdown layout docs/performance.md carries.
func TestTableGolden(t *testing.T) {
	rows := []row{
		{Name: "training step", Unit: "tokens/s", Moec: []float64{2100, 1900, 2500}, Torch: []float64{1000, 1000, 1100}, Target: 2},
		{Name: "generation", Unit: "tokens/s", Moec: []float64{400.5, 380}, Torch: []float64{150, 160}, Target: 3},
		{Name: "peak memory", Unit: "MiB", Moec: []float64{300}, Torch: []float64{850}, Target: 1, Ceiling: true},
		{Name: "sgemm", Unit: "GFLOP/s", Moec: []float64{80.25}, Torch: []float64{79.5}},
		{Name: "fraction of peak", Unit: "%", Moec: []float64{0.55, 0.62, 0.6}, Target: 0.6, Single: true},
	}
	var got bytes.Buffer
	writeTable(&got, rows)
	path := filepath.Join("testdata", "table.txtar")
	if *update {
		a := &txtar.Archive{Comment: []byte("writeTable's Markdown for fixed rows (go test -update rewrites it)\n"),
			Files: []txtar.File{{Name: "table.md", Data: got.Bytes()}}}
		if err := os.WriteFile(path, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	a, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Files) != 1 {
		t.Fatalf("%s: want one file", path)
	}
	if diff := cmp.Diff(string(a.Files[0].Data), got.String()); diff != "" {
		t.Fatalf("table (-golden +got):\n%s", diff)
	}
	if !strings.Contains(got.String(), "**missed**") {
		t.Fatal("a missed target is not marked")
	}
}

// TestWorkerForward runs one real moec measurement in-process: the JSON line must carry a
// positive rate and the model's initial loss, near ln 256 for a fresh byte model.
func TestWorkerForward(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the benchmark model")
	}
	var out bytes.Buffer
	if err := runWorker("forward", 0.01, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"tokens_per_s":`) || !strings.Contains(out.String(), `"loss":5.`) {
		t.Fatalf("worker printed %q", out.String())
	}
	// The step programs' forward and the hand-written model's start from the same weights
	// and compute the same loss: the two moec rows of the table measure one workload.
	var step, hand result
	for _, c := range []struct {
		mode string
		res  *result
	}{{"forward", &step}, {"forward-nn", &hand}} {
		var b bytes.Buffer
		if err := runWorker(c.mode, 0.01, &b); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b.Bytes(), c.res); err != nil {
			t.Fatal(err)
		}
	}
	if d := math.Abs(step.Loss - hand.Loss); d > 1e-5*hand.Loss {
		t.Errorf("forward loss: step programs %.7f, hand-written %.7f", step.Loss, hand.Loss)
	}
	if err := runWorker("nonsense", 0.01, &out); err == nil {
		t.Fatal("an unknown mode was accepted")
	}
}

// TestRunFlags: the listing mode prints the expansion, and nonsense is refused before any
// child process starts.
func TestRunFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-list-coretypes", "-coretypes", "default,Zen"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if out.String() != "default\nZen\n" {
		t.Fatalf("-list-coretypes printed %q", out.String())
	}
	for _, args := range [][]string{{"-reps", "0"}, {"-seconds", "-1"}, {"-bogus"}} {
		if err := run(args, &out, &errb); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}
