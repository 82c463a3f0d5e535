package gogen_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/program"
)

// renamed returns a copy of the program with the model, train and stage names replaced,
// as a program built in Go (not parsed) can have any names.
func renamed(prog *program.Program, model, stage, from string) (*program.Program, *program.Train, *program.Stage) {
	tr := *prog.Trains[prog.TrainOrder[0]]
	m := *prog.Models[tr.Model]
	m.Name = model
	tr.Model, tr.Name = model, model
	var stages []*program.Stage
	for _, s := range tr.Stages {
		c := *s
		if c.Name == "moe" {
			c.Name, c.From = stage, from
		} else {
			c.Name = from
		}
		stages = append(stages, &c)
	}
	tr.Stages = stages
	p := *prog
	p.Models = map[string]*program.Model{model: &m}
	p.Trains = map[string]*program.Train{model: &tr}
	p.TrainOrder = []string{model}
	return &p, &tr, stages[1]
}

// TestHostileNames: names with quotes, comment terminators, newlines, backquotes, path
// segments and Go keywords give the same program as benign names up to the sanitised
// name, a program that parses, and files in the same fixed places.
func TestHostileNames(t *testing.T) {
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	bp, btr, bst := renamed(prog, "tiny", "moe", "dense")
	benign, err := gogen.ConfigFor(bp, btr, bst)
	if err != nil {
		t.Fatal(err)
	}
	want, err := gogen.MainSource(benign)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range [][3]string{
		{"a\"b*/\n../x", "../../st", "package main`\nfunc init() { panic(1) }"},
		{"func", "package", "x/../import"},
		{"ünï;cødé", "\\\"\n// DO NOT EDIT", "*/ /*"},
	} {
		hp, htr, hst := renamed(prog, n[0], n[1], n[2])
		cfg, err := gogen.ConfigFor(hp, htr, hst)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Name != codegen.Ident(n[0], n[1]) || cfg.FromStage != codegen.SanitizePath(n[2]) {
			t.Fatalf("names not sanitised: %q, from %q", cfg.Name, cfg.FromStage)
		}
		got, err := gogen.MainSource(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.ParseFile(token.NewFileSet(), "main.go", got, parser.AllErrors); err != nil {
			t.Errorf("%q: the program does not parse: %v", n, err)
		}
		norm := strings.ReplaceAll(strings.ReplaceAll(got, cfg.Name, benign.Name), cfg.FromStage, benign.FromStage)
		if norm != want {
			t.Errorf("%q: the program differs from the benign one beyond the sanitised names:\n%s", n, firstDiff(want, norm))
		}
		dir := t.TempDir()
		res, err := gogen.Emit(dir, cfg, gogen.Options{ModuleDir: "."})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range res.Files {
			if filepath.Dir(f) != filepath.Join(dir, gogen.Dir) {
				t.Errorf("%q: wrote %s", n, f)
			}
		}
		mod, _ := os.ReadFile(filepath.Join(dir, gogen.Dir, gogen.ModFile))
		if !strings.Contains(string(mod), "module moecgen/"+cfg.Name+"\n") {
			t.Errorf("%q: go.mod:\n%s", n, mod)
		}
	}
}

// TestEmitRefusesNothingItCannotTrain: a model the CPU runtime does not compute gets a
// note, not an error that would fail the whole build.
func TestEmitUnsupportedModel(t *testing.T) {
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	tr := prog.Trains[prog.TrainOrder[0]]
	cfg, err := gogen.ConfigFor(prog, tr, tr.Stages[0])
	if err != nil {
		t.Fatal(err)
	}
	m := *cfg.Model
	m.Attention.MLA, m.Attention.KVLoraRank = true, 8
	cfg.Model = &m
	dir := t.TempDir()
	res, err := gogen.Emit(dir, cfg, gogen.Options{})
	if err != nil || len(res.Files) != 0 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "latent attention") {
		t.Fatalf("Emit of an MLA model: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, gogen.Dir)); !os.IsNotExist(err) {
		t.Errorf("go/ written for a model the runtime cannot train: %v", err)
	}
}

// TestConfigMatchesRun: ConfigFor resolves sizes as runtime/train does (the losses test
// relies on it too; this says which number differs).
func TestConfigFor(t *testing.T) {
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	tr := prog.Trains[prog.TrainOrder[0]]
	cfg, err := gogen.ConfigFor(prog, tr, tr.Stages[0])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SeqLen != 32 || cfg.MicroBatch != 4 || cfg.Accum != 2 || cfg.Steps != 20 || cfg.FromStage != "" || cfg.Model.MoE != nil {
		t.Errorf("dense stage: %+v", cfg)
	}
	st := *tr.Stages[1]
	st.Steps, st.Tokens = 0, 256*7
	cfg, err = gogen.ConfigFor(prog, tr, &st)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Steps != 7 || cfg.FromStage != "dense" || cfg.Model.MoE == nil || cfg.Model.MoE.Experts != 4 {
		t.Errorf("moe stage by tokens: steps %d, from %q", cfg.Steps, cfg.FromStage)
	}
	st.Tokens = 0
	if _, err := gogen.ConfigFor(prog, tr, &st); err == nil {
		t.Error("a stage without steps or tokens was accepted")
	}
}
