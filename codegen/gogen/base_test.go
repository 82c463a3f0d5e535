package gogen_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen/gogen"
)

// TestUsageListsEveryFlag: the usage line of each stage's program names every flag its
// main defines, -from included for a stage that grows.
func TestUsageListsEveryFlag(t *testing.T) {
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	tr := prog.Trains[prog.TrainOrder[0]]
	flagDef := regexp.MustCompile(`flag\.[A-Za-z0-9]+\("([a-z-]+)"`)
	for _, st := range tr.Stages {
		cfg, err := gogen.ConfigFor(prog, tr, st)
		if err != nil {
			t.Fatal(err)
		}
		src, err := gogen.MainSource(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var usage string
		for _, line := range strings.Split(src, "\n") {
			if strings.HasPrefix(line, "Usage: ") {
				usage = line
			}
		}
		defs := flagDef.FindAllStringSubmatch(src, -1)
		if usage == "" || len(defs) == 0 {
			t.Fatalf("stage %s: no usage line (%q) or no flags (%d)", st.Name, usage, len(defs))
		}
		for _, d := range defs {
			if !strings.Contains(usage+" ", " -"+d[1]+" ") && !strings.Contains(usage, "[-"+d[1]+" ") {
				t.Errorf("stage %s: flag -%s is missing from %q", st.Name, d[1], usage)
			}
		}
		if grows := st.From != ""; grows != strings.Contains(usage, " -from CHECKPOINT") {
			t.Errorf("stage %s (grows: %v): usage %q", st.Name, grows, usage)
		}
	}
}

// TestProgramTakesDataFromTheMoeFolder: a relative data glob resolves from the .moe
// file's folder, as in `moec run`, whatever the program's working directory.
func TestProgramTakesDataFromTheMoeFolder(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs a program; skipped with -short")
	}
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range ar.Files {
		files[f.Name] = f.Data
	}
	src := string(files["input.moe"])
	const glob = `"$GOROOT/src/strings/*.go"`
	if !strings.Contains(src, glob) {
		t.Fatalf("testdata/tiny.txtar no longer reads %s", glob)
	}
	files["input.moe"] = []byte(strings.Replace(src, glob, `"text/*.txt"`, 1))
	prog := loadSections(t, files)
	tr := prog.Trains[prog.TrainOrder[0]]
	cfg, err := gogen.ConfigFor(prog, tr, tr.Stages[0])
	if err != nil {
		t.Fatal(err)
	}

	root := t.TempDir()
	moeDir := filepath.Join(root, "models")
	if err := os.MkdirAll(filepath.Join(moeDir, "text"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("the quick brown fox jumps over the lazy dog; ", 2000)
	if err := os.WriteFile(filepath.Join(moeDir, "text", "a.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(root, "out", "tiny", "dense")
	if _, err := gogen.Emit(outDir, cfg, gogen.Options{ModuleDir: gogen.FindModule("."), SourceDir: moeDir}); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join(outDir, gogen.Dir, gogen.MainFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), `sourceDir  = "../../../../models"`) {
		t.Errorf("main.go does not record the .moe file's folder relative to go/:\n%s", firstLines(string(main), 90))
	}
	exe := filepath.Join(root, "prog")
	build := exec.Command(gobin, "build", "-o", exe, ".")
	build.Dir = filepath.Join(outDir, gogen.Dir)
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Run from a folder that holds no text/: only the recorded base can find the data.
	for _, wd := range []string{build.Dir, t.TempDir()} {
		run := exec.Command(exe, "-steps", "1", "-generate", "0")
		run.Dir = wd
		out, err := run.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "step 1 loss ") {
			t.Errorf("from %s: %v\n%s", wd, err, out)
		}
	}
	// -base still overrides it, and a wrong one fails.
	run := exec.Command(exe, "-steps", "1", "-generate", "0", "-base", root)
	if out, err := run.CombinedOutput(); err == nil {
		t.Errorf("-base %s (no text/ there) ran:\n%s", root, out)
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
