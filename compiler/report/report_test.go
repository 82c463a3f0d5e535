package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/program"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// goProgram is a checked program built in Go: DeepSeek-V3 and a HunYuan-shaped model with a
// curriculum and a serve block. It exercises the report without the checker.
func goProgram() *program.Program {
	// Literals on purpose: Build must report a program no checker resolved; TestGolden covers checked ones.
	ds := &program.Model{
		Name: "deepseek_v3", Vocab: 129280, DModel: 7168, Layers: 61, SeqLen: 4096,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, MTPDepth: 1,
		Attention: program.Attention{Heads: 128, KVHeads: 128, MLA: true, QLoraRank: 1536, KVLoraRank: 512,
			QKNopeHeadDim: 128, QKRopeHeadDim: 64, VHeadDim: 128, ShareWeights: 1, ShareKV: 1},
		FFN: program.FFN{Hidden: 18432, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 256, TopK: 8, ExpertHidden: 2048, Activation: program.SwiGLU,
			SharedExperts: 1, SharedHidden: 2048, Every: 1, FirstDense: 3,
			Router: program.RouteHidden, Score: program.Sigmoid, Normalize: true,
			AuxFreeBias: 0.001, Groups: 8, TopKGroups: 4},
	}
	hy := &program.Model{
		Name: "hy", Vocab: 150000, DModel: 256, Layers: 6, SeqLen: 512,
		Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: true, Position: program.Rotary,
		Attention: program.Attention{Heads: 8, KVHeads: 8, HeadDim: 32, TalkingHeads: true, ShareWeights: 0.5, ShareKV: 1},
		FFN:       program.FFN{Hidden: 1024, Activation: program.GELU},
		MoE: &program.MoE{Experts: 64, TopK: 1, ExpertHidden: 1024, Activation: program.GELU, Every: 2,
			Router: program.RouteTokenEmbedding, RouterDim: 256},
	}
	train := &program.Train{
		Name: "hy", Model: "hy", Cluster: "taiji", TokensPerBatch: 1 << 20, Precision: program.BF16,
		Stages: []*program.Stage{
			{Name: "dense", Experts: 1, Tokens: 10e9},
			{Name: "mid", From: "dense", Experts: 8, Tokens: 4e9},
			{Name: "full", From: "mid", Experts: 64, Tokens: 1e9},
		},
	}
	return &program.Program{
		Models:     map[string]*program.Model{"deepseek_v3": ds, "hy": hy},
		ModelOrder: []string{"deepseek_v3", "hy"},
		Trains:     map[string]*program.Train{"hy": train},
		TrainOrder: []string{"hy"},
		Serves:     map[string]*program.Serve{"hy": {Name: "hy", Model: "hy", Cluster: "taiji", Precision: program.FP16, Layout: "auto"}},
		ServeOrder: []string{"hy"},
	}
}

// planSection stands in for what the planner adds.
func planSection() Section {
	return Section{Title: "Plan", Markdown: "dp 4 × ep 8\n", JSON: map[string]any{"dp": 4, "ep": 8}}
}

func TestGoBuiltGolden(t *testing.T) {
	r := Build(goProgram(), "gobuilt.moe", []Section{planSection()})
	md := Markdown(r, []Section{planSection()})
	js, err := JSON(r)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "gobuilt.golden"), nil, map[string][]byte{"report.md": md, "report.json": js})
}

// golden compares got (section name -> content) with the txtar file at path, or rewrites it
// with -update. keep are sections of the file the test reads but does not produce (the
// input), preserved on update.
func golden(t *testing.T, path string, keep []txtar.File, got map[string][]byte) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if *update {
		a := &txtar.Archive{Files: keep}
		if old, err := os.ReadFile(path); err == nil {
			a.Comment = txtar.Parse(old).Comment
		}
		for _, n := range names {
			a.Files = append(a.Files, txtar.File{Name: n, Data: got[n]})
		}
		if err := os.WriteFile(path, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	want := map[string][]byte{}
	for _, f := range txtar.Parse(data).Files {
		want[f.Name] = f.Data
	}
	for _, n := range names {
		w, ok := want[n]
		if !ok {
			t.Errorf("%s: no -- %s -- section (run go test -update)", path, n)
			continue
		}
		if d := cmp.Diff(string(w), string(got[n])); d != "" {
			t.Errorf("%s: %s differs (-want +got):\n%s", path, n, d)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	prog := goProgram()
	if err := Write(dir, prog, "gobuilt.moe", []Section{planSection()}); err != nil {
		t.Fatal(err)
	}
	md1, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	js1, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Deterministic: a second write gives the same bytes.
	if err := Write(dir, prog, "gobuilt.moe", []Section{planSection()}); err != nil {
		t.Fatal(err)
	}
	md2, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	js2, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if !bytes.Equal(md1, md2) || !bytes.Equal(js1, js2) {
		t.Error("report is not deterministic")
	}
	var back struct {
		Models []struct {
			Name        string `json:"name"`
			Conventions []struct {
				Name  string `json:"name"`
				Total int64  `json:"total"`
			} `json:"conventions"`
		} `json:"models"`
		Trains []struct {
			Stages []struct {
				Experts    int     `json:"experts"`
				TrainFLOPs float64 `json:"train_flops"`
			} `json:"stages"`
		} `json:"trains"`
		Sections []struct {
			Title string         `json:"title"`
			Data  map[string]int `json:"data"`
		} `json:"sections"`
	}
	if err := json.Unmarshal(js1, &back); err != nil {
		t.Fatal(err)
	}
	if back.Models[0].Name != "deepseek_v3" || back.Models[0].Conventions[0].Total != 671026404352 {
		t.Errorf("report.json models = %+v", back.Models)
	}
	if st := back.Trains[0].Stages; len(st) != 3 || st[0].Experts != 1 || st[2].Experts != 64 || !(st[0].TrainFLOPs > 0) {
		t.Errorf("report.json stages = %+v", st)
	}
	if len(back.Sections) != 1 || back.Sections[0].Data["ep"] != 8 {
		t.Errorf("report.json sections = %+v", back.Sections)
	}
	if !strings.Contains(string(md1), "\n## Plan\n\ndp 4 × ep 8\n") {
		t.Error("report.md lacks the extra section")
	}
}

func TestWriteUnwritableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(file, "sub"), goProgram(), "x.moe", nil); err == nil {
		t.Error("want an error when the output directory cannot be created")
	}
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{both(46702792704), "46.7B (46,702,792,704)"},
		{both(999), "999"},
		{sci(3.14159e23), "3.14e23"},
		{sci(0), "0"},
		{describeIndices([]int{0, 1, 2}), "0-2"},
		{describeIndices([]int{1, 3, 5, 7}), "1-7 step 2"},
		{describeIndices([]int{0, 2, 3, 4, 9}), "0, 2-4, 9"},
		{describeIndices([]int{0, 5}), "0, 5"},
		{describeIndices([]int{7}), "7"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestEmptyProgram(t *testing.T) {
	for _, prog := range []*program.Program{nil, {}} {
		r := Build(prog, "empty.moe", nil)
		js, err := JSON(r)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"source":"empty.moe","models":[],"trains":[],"serves":[],"sections":[]}`
		var compact bytes.Buffer
		if err := json.Compact(&compact, js); err != nil {
			t.Fatal(err)
		}
		if compact.String() != want {
			t.Errorf("empty report.json = %s, want %s", compact.String(), want)
		}
		if md := string(Markdown(r, nil)); md != "# moec build report: empty.moe\n" {
			t.Errorf("empty report.md = %q", md)
		}
	}
}

func TestServeStage(t *testing.T) {
	prog := goProgram()
	prog.Serves["hy"].Stage = "mid"
	r := Build(prog, "x.moe", nil)
	s := r.Serves[0]
	mid := r.Trains[0].Stages[1]
	if s.Params != mid.Total || s.ActiveParams != mid.Active {
		t.Errorf("serving stage mid: %d params (%d active), want the stage's %d (%d)", s.Params, s.ActiveParams, mid.Total, mid.Active)
	}
	if s.WeightBytes != 2*float64(mid.Total) {
		t.Errorf("fp16 weights = %g bytes, want %d", s.WeightBytes, 2*mid.Total)
	}
}

// TestCompressCounted: a compress block's counted weights appear in report.json and as a
// row of the Markdown report.
func TestCompressCounted(t *testing.T) {
	prog := goProgram()
	prog.Compresses = map[string]*program.Compress{"hy": {Name: "hy", Model: "hy", Experts: "int4", Dense: "int8", Embed: "fp32",
		Head: "fp32", Group: 128, KeepExperts: 4, FP32Bytes: 4 << 20, Bytes: 1 << 20}}
	prog.CompressOrder = []string{"hy"}
	r := Build(prog, "x.moe", nil)
	if len(r.Compresses) != 1 || r.Compresses[0].Bytes != 1<<20 || r.Compresses[0].KeepExperts != 4 {
		t.Fatalf("compresses: %+v", r.Compresses)
	}
	md := string(Markdown(r, nil))
	if want := "| hy | int4 | int8 | fp32 | fp32 | 128 | 4 | 4 MiB | 1 MiB (25%) |"; !strings.Contains(md, want) {
		t.Errorf("markdown lacks %q:\n%s", want, md)
	}
}
