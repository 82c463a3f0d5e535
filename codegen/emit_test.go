package codegen_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/llir/llvm/asm"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/llvmrt"
)

func tinyModel(t *testing.T) *program.Model {
	t.Helper()
	data, err := os.ReadFile("testdata/hunyuan_tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(data), "-- model.json --\n")
	body, _, _ := strings.Cut(rest, "\n-- ")
	var m program.Model
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

var identRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

func TestSanitizePath(t *testing.T) {
	for _, benign := range []string{"hunyuan_tiny", "hunyuan-1t", "stage.2", "dense"} {
		if got := codegen.SanitizePath(benign); got != benign {
			t.Errorf("SanitizePath(%q) = %q, want it unchanged", benign, got)
		}
	}
	seen := map[string]string{}
	for _, h := range []string{"..", ".", "../x", "a/b", "/etc", "-rf", ".hidden", "", "ünï", "a\nb", "a\x00b", "C:\\x",
		strings.Repeat("z", 100)} {
		got := codegen.SanitizePath(h)
		if got == "" || strings.ContainsAny(got, "/\\\x00") || strings.HasPrefix(got, ".") || strings.HasPrefix(got, "-") ||
			len(got) > 64 || filepath.Base(got) != got {
			t.Errorf("SanitizePath(%q) = %q is not one safe path component", h, got)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("SanitizePath(%q) and (%q) collide: %q", h, prev, got)
		}
		seen[got] = h
	}
}

func TestIdent(t *testing.T) {
	if got := codegen.Ident("hunyuan_tiny", "dense"); got != "hunyuan_tiny_dense" {
		t.Errorf("benign name changed: %q", got)
	}
	hostile := []string{"a\"b*/\n../x", "int", "for", "../../etc/passwd", "ünïcødé", "", "9lives", "\x00", "x;y", "a b",
		strings.Repeat("long", 40), "}; system(\"rm\"); {", "; DO NOT EDIT\n@x = global"}
	seen := map[string]string{}
	for _, h := range hostile {
		id := codegen.Ident(h, "st*/age")
		if !identRE.MatchString(id) || len(id) > 64 {
			t.Errorf("Ident(%q) = %q is not a short identifier", h, id)
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("Ident(%q) and Ident(%q) collide: %q", h, prev, id)
		}
		seen[id] = h
	}
}

// listFiles returns every regular file under dir, relative and sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestHostileNames: names with quotes, comment terminators, newlines, path segments,
// keywords and non-ASCII produce the same files as a benign name, up to the sanitised
// name itself, and those files compile and run.
func TestHostileNames(t *testing.T) {
	m := tinyModel(t)
	benignDir := t.TempDir()
	benign, err := codegen.Emit(benignDir, "tiny", "dense", m, codegen.Options{NoCompile: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range [][2]string{{"a\"b*/\n../x", "../../st"}, {"int", "for"}, {"ünï;cødé", "\\\"\n#include <x>"}} {
		dir := t.TempDir()
		res, err := codegen.Emit(dir, name[0], name[1], m, codegen.Options{NoCompile: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := listFiles(t, dir), listFiles(t, benignDir); !slices.Equal(got, want) {
			t.Fatalf("hostile names wrote %v, benign %v", got, want)
		}
		for _, f := range res.Files {
			rel, err := filepath.Rel(dir, f)
			if err != nil {
				t.Fatal(err)
			}
			h, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(benignDir, rel))
			if err != nil {
				t.Fatal(err)
			}
			if strings.ReplaceAll(string(h), res.Name, benign.Name) != string(b) {
				t.Errorf("%q/%q: %s differs from the benign file beyond the name", name[0], name[1], rel)
			}
		}
		ll, _ := os.ReadFile(filepath.Join(dir, "llvm", "moe_kernels.ll"))
		if _, err := asm.ParseString("hostile.ll", string(ll)); err != nil {
			t.Errorf("hostile .ll does not parse: %v", err)
		}
		if clang := cuda.FindClang(); clang != "" {
			if _, err := cuda.CompilePTX(context.Background(), clang, filepath.Join(dir, "cuda", "moe_kernels.cu"), "sm_90"); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestEmitCompilesAndRuns: with clang, Emit leaves a library whose kernels match the
// references (one forward and one backward kernel here; codegen/llvm checks them all).
func TestEmitCompilesAndRuns(t *testing.T) {
	m := tinyModel(t)
	dir := t.TempDir()
	res, err := codegen.Emit(dir, "hunyuan_tiny", "trillion", m, codegen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.ClangFound {
		if len(res.Notes) == 0 || len(res.Compiled) != 0 {
			t.Fatalf("no clang, but the result says %+v", res)
		}
		t.Skip("clang not on PATH")
	}
	for _, f := range res.Files {
		text, _ := os.ReadFile(f)
		if first, _, _ := strings.Cut(string(text), "\n"); !strings.Contains(first, "Code generated by moec. DO NOT EDIT.") {
			t.Errorf("%s lacks the generated-code header", f)
		}
	}
	lib, err := llvmrt.Open(filepath.Join(dir, "llvm", "libmoe_kernels.so"))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	sh, _ := kernels.ShapeOf(m)
	ks, _ := kernels.Set(sh)
	env, err := kernels.Fixture(ks, sh, 19, 16, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"router_logits", "router_fwd", "expert_down_bwd"} {
		k := kernels.Find(ks, name)
		ck, err := lib.Kernel(k)
		if err != nil {
			t.Fatal(err)
		}
		want, got := env.Clone(), env.Clone()
		if err := k.Ref(want); err != nil {
			t.Fatal(err)
		}
		if err := ck.Run(got, 2); err != nil {
			t.Fatal(err)
		}
		if err := kernels.Compare(k, got, want, 2e-4); err != nil {
			t.Error(err)
		}
	}
}

func TestEmitDenseStage(t *testing.T) {
	m := tinyModel(t)
	base := &program.Train{Stages: []*program.Stage{{Name: "dense", Experts: 1}}}
	dense := program.StageModel(m, base.Stages[0])
	if dense.MoE != nil {
		t.Fatal("StageModel kept the MoE of a one-expert stage")
	}
	res, err := codegen.Emit(t.TempDir(), m.Name, "dense", dense, codegen.Options{NoCompile: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 5 || len(res.Notes) < 2 {
		t.Fatalf("dense stage: %+v", res)
	}
}

func TestEmitRejectsImpossibleShapes(t *testing.T) {
	m := tinyModel(t)
	m.Attention.HeadDim = 7 // rotary needs pairs
	if _, err := codegen.Emit(t.TempDir(), "bad", "s", m, codegen.Options{NoCompile: true}); err == nil {
		t.Fatal("odd head_dim accepted")
	}
}
