package gogen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/modfile"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// File names inside outDir/go. Fixed: names from the .moe file never reach paths.
const (
	Dir      = "go"
	MainFile = "main.go"
	ModFile  = "go.mod"
	SumFile  = "go.sum"
)

// Options say where the moec module is, for the generated go.mod.
type Options struct {
	// ModuleDir is the root of the moec module (the directory of its go.mod). The
	// generated go.mod replaces the module with it, as a path relative to outDir/go when
	// it can be, so an out/ tree inside a clone builds wherever the clone lives. "" =
	// look upwards from outDir, then from the working directory.
	ModuleDir string
	// SourceDir is the folder of the .moe file the stage comes from. Emit records it in the
	// program relative to outDir/go (Config.SourceDir), like the go.mod's replace path, so
	// the output and the .moe file can move together (a clone moved elsewhere still
	// works); an output folder moved away from the .moe file needs -base. "" keeps
	// cfg.SourceDir.
	SourceDir string
	// Step, when set, is rank 0's step program for the stage (compiler/step): Emit also
	// writes its Go form to outDir/go/step/main.go (StepSource).
	Step *step.Program
}

// Result says what Emit wrote.
type Result struct {
	Files []string
	Notes []string
}

// Emit writes outDir/go/{main.go, go.mod, go.sum}: a Go main package that trains cfg's
// stage and then generates text. A model the CPU runtime does not compute (nn refuses
// it) is not an error of the build: Emit writes nothing and says why in a note.
func Emit(outDir string, cfg Config, opt Options) (Result, error) {
	var res Result
	dir := filepath.Join(outDir, Dir)
	if opt.SourceDir != "" {
		cfg.SourceDir = relativeDir(dir, opt.SourceDir)
	}
	src, err := MainSource(cfg)
	var mainNotWritten *NotWrittenError
	if err != nil {
		var ue *nn.UnsupportedError
		switch {
		case errors.As(err, &ue):
			res.Notes = append(res.Notes, fmt.Sprintf("go/ not generated for %s: %v", cfg.Name, ue))
			return res, nil
		case errors.As(err, &mainNotWritten):
			res.Notes = append(res.Notes, fmt.Sprintf("go/%s not generated for %s: %v", MainFile, cfg.Name, mainNotWritten.Reason))
			if opt.Step == nil {
				return res, nil
			}
			// The stage's step program is written out alone.
		default:
			return res, err
		}
	}
	modDir := opt.ModuleDir
	if modDir == "" {
		modDir = FindModule(dir)
	}
	if modDir == "" {
		if wd, err := os.Getwd(); err == nil {
			modDir = FindModule(wd)
		}
	}
	replace := ""
	var sum []byte
	if modDir != "" {
		replace = replacePath(dir, modDir)
		// The moec module's checksums cover everything the program's imports reach.
		if sum, err = os.ReadFile(filepath.Join(modDir, SumFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("gogen: %w", err)
		}
	} else {
		res.Notes = append(res.Notes, "go/go.mod: the moec module was not found above the output or working directory; add a replace directive for "+module+" before go build")
	}
	goVersion := "1.26"
	var deps []Dep
	if modDir != "" {
		if v := goDirective(filepath.Join(modDir, ModFile)); v != "" {
			goVersion = v
		}
		if deps, err = moduleRequirements(filepath.Join(modDir, ModFile)); err != nil {
			return res, fmt.Errorf("gogen: %w", err)
		}
	}
	type file struct {
		name string
		data []byte
	}
	var files []file
	if mainNotWritten == nil {
		files = append(files, file{MainFile, []byte(src)})
	}
	files = append(files, file{ModFile, []byte(GoMod(cfg.Name, goVersion, replace, deps...))}, file{SumFile, sum})
	if opt.Step != nil {
		stepSrc, err := StepSource(cfg, opt.Step)
		var nw *NotWrittenError
		switch {
		case errors.As(err, &nw):
			res.Notes = append(res.Notes, fmt.Sprintf("go/%s not generated for %s: %v", StepDir, cfg.Name, nw))
		case err != nil:
			return res, err
		default:
			files = append(files, file{filepath.Join(StepDir, StepFile), []byte(stepSrc)})
		}
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := codegen.WriteFileAtomic(p, f.data); err != nil {
			return res, fmt.Errorf("gogen: %w", err)
		}
		res.Files = append(res.Files, p)
	}
	return res, nil
}

// Dep is a module the moec module requires, at the version it requires.
type Dep struct{ Path, Version string }

// GoMod is the generated module's go.mod: its own module (so the generated program is
// never part of a `go build ./...` of the surrounding tree) requiring moec, replaced by
// the local checkout at replace ("" leaves the replace directive to the user), and moec's
// own requirements as indirect ones: a main module must list every module that provides a
// package it builds (the runtime draws loss.png with gonum's plot, for one), and with
// -mod=readonly go build does not add them itself.
func GoMod(name, goVersion, replace string, deps ...Dep) string {
	var b strings.Builder
	b.WriteString("// Code generated by moec. DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "module moecgen/%s\n\ngo %s\n\nrequire %s v0.0.0-00010101000000-000000000000\n", name, goVersion, module)
	if len(deps) > 0 {
		b.WriteString("\nrequire (\n")
		for _, d := range deps {
			fmt.Fprintf(&b, "\t%s %s // indirect\n", d.Path, d.Version)
		}
		b.WriteString(")\n")
	}
	if replace != "" {
		fmt.Fprintf(&b, "\nreplace %s => %s\n", module, quoteModPath(replace))
	}
	return b.String()
}

// quoteModPath quotes a replacement path when go.mod syntax needs it.
func quoteModPath(p string) string {
	if strings.ContainsAny(p, " \t\"'`\\") {
		return fmt.Sprintf("%q", p)
	}
	return p
}

// replacePath is modDir as seen from dir: relative when both resolve to absolute paths
// (a local replacement must start with ./ or ../), else absolute.
func replacePath(dir, modDir string) string {
	absDir, err1 := filepath.Abs(dir)
	absMod, err2 := filepath.Abs(modDir)
	if err1 != nil || err2 != nil {
		return modDir
	}
	rel, err := filepath.Rel(absDir, absMod)
	if err != nil {
		return absMod
	}
	rel = filepath.ToSlash(rel)
	if !strings.HasPrefix(rel, "../") && rel != ".." {
		rel = "./" + rel
	}
	return rel
}

// relativeDir is target as seen from dir, slash-separated, or target made absolute when
// there is no relative path between them (another volume).
func relativeDir(dir, target string) string {
	absDir, err1 := filepath.Abs(dir)
	absTarget, err2 := filepath.Abs(target)
	if err1 != nil || err2 != nil {
		return filepath.ToSlash(target)
	}
	rel, err := filepath.Rel(absDir, absTarget)
	if err != nil {
		return filepath.ToSlash(absTarget)
	}
	return filepath.ToSlash(rel)
}

// FindModule returns the nearest directory at or above dir whose go.mod declares the
// moec module, or "".
func FindModule(dir string) string {
	d, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, ModFile)); err == nil && declaresModule(string(b)) {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}

func declaresModule(gomod string) bool {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == module {
			return true
		}
	}
	return false
}

// goDirective reads the go version a go.mod declares ("" when unreadable).
// moduleRequirements lists the requirements of the go.mod at path, in its order; none
// when there is no go.mod there.
func moduleRequirements(path string) ([]Dep, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the moec module's requirements: %w", err)
	}
	f, err := modfile.ParseLax(path, b, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the moec module's requirements: %w", err)
	}
	deps := make([]Dep, 0, len(f.Require))
	for _, r := range f.Require {
		deps = append(deps, Dep{Path: r.Mod.Path, Version: r.Mod.Version})
	}
	return deps, nil
}

func goDirective(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "go" {
			return f[1]
		}
	}
	return ""
}
