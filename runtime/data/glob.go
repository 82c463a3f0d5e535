package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
)

// ExpandVars replaces $NAME and ${NAME} in pattern with environment values. GOROOT, when
// not in the environment, comes from `go env GOROOT` and then from the running binary's
// GOROOT, so the example corpus works on a plain Go install.
func ExpandVars(pattern string) (string, error) {
	var missing []string
	out := os.Expand(pattern, func(name string) string {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return v
		}
		if name == "GOROOT" {
			if v := goroot(); v != "" {
				return v
			}
		}
		missing = append(missing, name)
		return ""
	})
	if len(missing) > 0 {
		return "", diag.Runtimef(diag.CodeEmptyCorpus, "data glob %q uses $%s, which is not set", pattern, missing[0])
	}
	return out, nil
}

func goroot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if s := strings.TrimSpace(string(out)); s != "" {
			return s
		}
	}
	//lint:ignore SA1019 the fallback when no go command is on PATH.
	return runtime.GOROOT()
}

// Glob returns the regular files matching pattern, sorted. Besides filepath.Match syntax in
// each path element, an element "**" matches zero or more directories. Relative patterns
// are taken relative to base.
func Glob(pattern, base string) ([]string, error) {
	p, err := ExpandVars(pattern)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(p) && base != "" {
		p = filepath.Join(base, p)
	}
	p = filepath.Clean(p)
	if !strings.Contains(p, "**") {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeEmptyCorpus, err, "data glob %q", pattern)
		}
		var files []string
		for _, f := range m {
			if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
				files = append(files, f)
			}
		}
		sort.Strings(files)
		return files, nil
	}
	// Walk from the longest prefix without pattern characters.
	parts := strings.Split(p, string(filepath.Separator))
	root := string(filepath.Separator)
	if !filepath.IsAbs(p) {
		root = "."
	}
	i := 0
	for ; i < len(parts); i++ {
		if parts[i] == "" || strings.ContainsAny(parts[i], `*?[\`) {
			if parts[i] != "" {
				break
			}
			continue
		}
		root = filepath.Join(root, parts[i])
	}
	rest := parts[i:]
	for _, seg := range rest {
		if _, err := filepath.Match(seg, ""); err != nil {
			return nil, diag.RuntimeWrap(diag.CodeEmptyCorpus, err, "data glob %q", pattern)
		}
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if matchSegments(rest, strings.Split(rel, string(filepath.Separator))) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, diag.RuntimeWrap(diag.CodeBadDataFile, err, "reading data glob %q", pattern)
	}
	sort.Strings(files)
	return files, nil
}

// matchSegments matches path elements against pattern elements where "**" matches any
// number (including zero) of elements.
func matchSegments(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for k := 0; k <= len(name); k++ {
				if matchSegments(pat[1:], name[k:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := filepath.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

func describeGlob(pattern string) string {
	if p, err := ExpandVars(pattern); err == nil && p != pattern {
		return fmt.Sprintf("%q (%s)", pattern, p)
	}
	return fmt.Sprintf("%q", pattern)
}
