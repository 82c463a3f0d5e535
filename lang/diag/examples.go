package diag

import (
	"embed"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// examples holds one example per documented code, named after it: lang/diag/examples/
// E0201.moe is a .moe file the checker (or the parser) reports E0201 for; E0601.txtar is a
// txtar archive whose comment holds the `$ moec ...` command lines that report E0601 and
// whose files are the inputs they read, for the codes no .moe file reports on its own
// (planning, runtime and interop codes). The first line of each says, as a comment, what
// is wrong. Tests in compiler/check (.moe) and cmd/moec (.txtar) run every example and
// hold it to its code.
//
//go:embed examples/*
var examples embed.FS

// CodeExample is the example of one code.
type CodeExample struct {
	Code Code
	// File is the example's file name: "E0201.moe" or "E0601.txtar".
	File string
	Text string
}

// IsArchive reports whether the example is a txtar archive of command lines and files
// rather than a single .moe file.
func (e CodeExample) IsArchive() bool { return strings.HasSuffix(e.File, ".txtar") }

// Example returns code c's example (matched without regard to case).
func Example(c Code) (CodeExample, bool) {
	for _, ex := range Examples() {
		if strings.EqualFold(string(ex.Code), string(c)) {
			return ex, true
		}
	}
	return CodeExample{}, false
}

// Examples returns every example, in code order: one per file of lang/diag/examples,
// whether or not its code is registered (a test holds the two together).
func Examples() []CodeExample {
	entries, err := fs.ReadDir(examples, "examples")
	if err != nil {
		return nil // the directory is embedded: it cannot be missing
	}
	var out []CodeExample
	for _, e := range entries {
		name := e.Name()
		data, err := fs.ReadFile(examples, path.Join("examples", name))
		if err != nil {
			continue
		}
		code := strings.TrimSuffix(name, path.Ext(name))
		out = append(out, CodeExample{Code: Code(code), File: name, Text: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// Commands returns an archive example's command lines: the lines of its comment that
// start with `$ `, split into words (single quotes group words, as in a shell). The
// last reports the example's code; the ones before prepare for it and succeed.
func (e CodeExample) Commands() [][]string {
	if !e.IsArchive() {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(e.Text, "\n") {
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(strings.TrimSpace(line), " --") {
			break // the first file: the comment ends here
		}
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			out = append(out, splitWords(cmd))
		}
	}
	return out
}

// splitWords splits a command line at spaces; single quotes group words.
func splitWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted = !quoted
			inWord = true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
