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

	"github.com/moec-dev/moec/bench/internal/pythons"
	"github.com/moec-dev/moec/compiler/analysis"
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
		{Name: "sgemm", Unit: "GFLOP/s", Moec: []float64{80.25}, Torch: []float64{79.5}, Peer: "torch 2.15.0"},
		{Name: "fraction of peak", Unit: "%", Moec: []float64{0.55, 0.62, 0.6}, Target: 0.6, Single: true},
	}
	// The bf16 loss curve's rows: a relative difference of 0.5% against a 1% ceiling, and
	// the two final losses.
	rows = append(rows, curveRows([]float64{2.4, 1.6}, []float64{2.41, 1.61})...)
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
	if err := runWorker("forward", sizeSmall, 0.01, 0, &out); err != nil {
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
		if err := runWorker(c.mode, sizeSmall, 0.01, 0, &b); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b.Bytes(), c.res); err != nil {
			t.Fatal(err)
		}
	}
	if d := math.Abs(step.Loss - hand.Loss); d > 1e-5*hand.Loss {
		t.Errorf("forward loss: step programs %.7f, hand-written %.7f", step.Loss, hand.Loss)
	}
	if err := runWorker("nonsense", sizeSmall, 0.01, 0, &out); err == nil {
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
	for _, args := range [][]string{{"-reps", "0"}, {"-seconds", "-1"}, {"-bogus"}, {"-large-reps", "0"},
		{"-large-seconds", "0"}, {"-size", "huge"}, {"-curve-steps", "-1"}, {"-worker", "curve", "-curve-steps", "-5"},
		{"-worker", "curve-bf16", "-curve-steps", "0"}} {
		if err := run(args, &out, &errb); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}

// TestLargeModelParams: the large size is the issue's ~219M-parameter model.
func TestLargeModelParams(t *testing.T) {
	got := analysis.Count(modelFor(sizeLarge)).TotalAll
	if got < 218e6 || got > 220e6 {
		t.Fatalf("large model: %d parameters, want about 219M", got)
	}
	if small := analysis.Count(benchModel()).TotalAll; small >= got/10 {
		t.Fatalf("small model: %d parameters, not the small size", small)
	}
}

func TestParseCPUInfo(t *testing.T) {
	text := "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile\n\n" +
		"processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
	d := parseCPUInfo(text)
	if d.Name != "Intel Xeon" || !d.AVX512() {
		t.Fatalf("parsed %+v", d)
	}
	want := "AVX2 yes, FMA yes, AVX-512 yes, AVX512-BF16 yes, AVX512-VNNI no, AVX-VNNI no, AMX yes, AMX-BF16 no, AMX-INT8 no"
	if got := d.Features(); got != want {
		t.Fatalf("features %q, want %q", got, want)
	}
	if parseCPUInfo("flags : fpu sse2\n").AVX512() {
		t.Fatal("AVX-512 without the flag")
	}
}

// TestPeerRowsStrongest: a row is held against the best peer of each repetition (the
// lowest for a ceiling), named after the peer with the best median, and each peer gets a
// row of its own without a target.
func TestPeerRowsStrongest(t *testing.T) {
	old := &peer{Torch: "1.13", Impl: map[string]string{"train": "stacked"}}
	cur := &peer{Torch: "2.15", Impl: map[string]string{"train": "modules"}}
	d := &driver{peers: []*peer{old, cur}}
	vals := map[string][]float64{"torch 1.13": {10, 30, 12}, "torch 2.15": {20, 15, 25}}
	rows := d.peerRows(row{Name: "train", Moec: []float64{40, 60, 50}, Target: 2}, "train", vals)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want the main row and one per peer", len(rows))
	}
	if diff := cmp.Diff([]float64{20, 30, 25}, rows[0].Torch); diff != "" {
		t.Errorf("strongest per repetition (-want +got):\n%s", diff)
	}
	if !strings.Contains(rows[0].Peer, "torch 2.15, modules") || rows[1].Target != 0 || rows[2].Target != 0 {
		t.Errorf("rows %+v", rows)
	}
	mem := d.peerRows(row{Name: "mem", Moec: []float64{5, 5, 5}, Target: 1, Ceiling: true}, "", vals)
	if diff := cmp.Diff([]float64{10, 15, 12}, mem[0].Torch); diff != "" {
		t.Errorf("a ceiling is held against the lowest (-want +got):\n%s", diff)
	}
	if !strings.HasSuffix(mem[0].Peer, "torch 1.13") {
		t.Errorf("memory row names %q", mem[0].Peer)
	}
	single := &driver{peers: []*peer{cur}}
	if rows := single.peerRows(row{Moec: []float64{1}}, "train", map[string][]float64{"torch 2.15": {2}}); len(rows) != 1 || rows[0].Peer != "torch 2.15, modules" {
		t.Errorf("one peer: %+v", rows)
	}
}

// TestPeerInfo: the peer script names its torch and product path, the line moebench
// prints for every peer.
func TestPeerInfo(t *testing.T) {
	if testing.Short() {
		t.Skip("imports torch")
	}
	py := pythons.Default()
	py, _, _ = strings.Cut(py, ",")
	p, err := newPeer(py, filepath.Join("..", "..", "peer", "moe_peer.py"))
	if err != nil {
		t.Skipf("no PyTorch peer: %v", err)
	}
	if p.Torch == "" || !strings.Contains(p.Backend, "BLAS_INFO=") {
		t.Fatalf("peer %+v", p)
	}
}
