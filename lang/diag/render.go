package diag

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Render writes d for a person to read:
//
//	model.moe:3:3: error[E0201]: unknown key `haeds` in block `attention`
//	    3 |   haeds = 32
//	      |   ^~~~~
//	  = note: ...
//	  = help: did you mean `heads`?
//
// src is the file d points into; without it (or when the position lies outside it) only
// the first line and the notes are written. The caret line marks exactly the diagnostic's
// range; a range that runs over several lines is marked to the end of its first line.
// Write errors are ignored, as fmt.Fprintf callers usually do, because rendering goes to
// a terminal or a buffer; use a bytes.Buffer to check them.
func Render(w io.Writer, d Diagnostic, src []byte) {
	line, ok := sourceLine(src, d.Range.Start.Line)
	render(w, d, line, ok)
}

// render writes d with line, the source line it points into when ok.
func render(w io.Writer, d Diagnostic, line string, ok bool) {
	fmt.Fprintln(w, d.String())
	if ok && d.Range.Start.IsValid() {
		line, r := clipLine(line, d.Range)
		d.Range = r
		num := fmt.Sprint(d.Range.Start.Line)
		gutter := strings.Repeat(" ", len(num)+1)
		fmt.Fprintf(w, " %s | %s\n", num, line)
		fmt.Fprintf(w, "%s | %s\n", gutter, caretLine(line, d.Range))
	}
	for _, n := range d.Notes {
		fmt.Fprintf(w, "  = note: %s\n", strings.ReplaceAll(n, "\n", "\n          "))
	}
	if d.Suggestion != "" {
		fmt.Fprintf(w, "  = help: %s\n", d.Suggestion)
	}
}

// MaxRendered is how many diagnostics RenderAll writes before it stops with "too many
// errors (N more)", as Go's compiler does: past a few dozen, further errors are mostly
// the same mistake repeated, and writing them all would bury the first ones.
const MaxRendered = 50

// RenderAll renders the diagnostics in list, taking each one's source from sources by
// file name, with a blank line between diagnostics. After MaxRendered of them it writes
// one line, "too many errors (N more)", where N counts every diagnostic not written.
// Each file's line starts are found once, so rendering costs the size of the files plus
// the lines shown, however many diagnostics point into one file.
func RenderAll(w io.Writer, list List, sources map[string][]byte) {
	indexes := map[string]lineIndex{}
	for i, d := range list {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if i == MaxRendered {
			fmt.Fprintf(w, "too many errors (%d more)\n", len(list)-i)
			return
		}
		src := sources[d.Range.File]
		ix, seen := indexes[d.Range.File]
		if !seen {
			ix = indexLines(src)
			indexes[d.Range.File] = ix
		}
		line, ok := ix.line(src, d.Range.Start.Line)
		render(w, d, line, ok)
	}
}

// lineIndex holds the offset where each line of a source starts.
type lineIndex []int

func indexLines(src []byte) lineIndex {
	if src == nil {
		return nil
	}
	ix := lineIndex{0}
	for i, c := range src {
		if c == '\n' {
			ix = append(ix, i+1)
		}
	}
	return ix
}

// line returns line n (1-based) of src without its line ending, as sourceLine does.
func (ix lineIndex) line(src []byte, n int) (string, bool) {
	if src == nil || n < 1 || n > len(ix) {
		return "", false
	}
	text := src[ix[n-1]:]
	if n < len(ix) {
		text = src[ix[n-1] : ix[n]-1]
	}
	return strings.TrimRight(string(text), "\r"), true
}

// sourceLine returns line n (1-based) of src without its line ending.
func sourceLine(src []byte, n int) (string, bool) {
	if src == nil || n < 1 {
		return "", false
	}
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(src, '\n')
		if j < 0 {
			return "", false
		}
		src = src[j+1:]
	}
	if j := bytes.IndexByte(src, '\n'); j >= 0 {
		src = src[:j]
	}
	return strings.TrimRight(string(src), "\r"), true
}

// maxShownLine is how many bytes of a source line a diagnostic shows. A generated file
// may hold a value a megabyte long on one line; its diagnostic shows the part around the
// range, not the megabyte.
const maxShownLine = 200

// clipLine cuts a line longer than maxShownLine to a window that starts a little before
// r and marks what it left out with "…", moving r's columns to match.
func clipLine(line string, r Range) (string, Range) {
	if len(line) <= maxShownLine {
		return line, r
	}
	from := min(max(r.Start.Col-1-maxShownLine/4, 0), len(line))
	for from > 0 && !utf8.RuneStart(line[from]) {
		from--
	}
	to := min(from+maxShownLine, len(line))
	for to < len(line) && !utf8.RuneStart(line[to]) {
		to--
	}
	shown := line[from:to]
	shift := -from
	if from > 0 {
		shown = "…" + shown
		shift += len("…")
	}
	endCol := len(shown) + 1 // just past the window's last source byte
	if to < len(line) {
		shown += "…"
	}
	r.Start.Col += shift
	if r.End.Line == r.Start.Line {
		// A range running past the window is marked to the window's end.
		r.End.Col = min(r.End.Col+shift, endCol)
	}
	return shown, r
}

// caretLine builds the `^~~~` marker for r under line. Columns count bytes, the marker
// counts characters, and tabs before the range are copied so the marker lines up however
// the terminal expands them.
func caretLine(line string, r Range) string {
	start := min(max(r.Start.Col-1, 0), len(line))
	end := start
	if r.End.Line == r.Start.Line && r.End.Col > r.Start.Col {
		end = min(r.End.Col-1, len(line))
	} else if r.End.Line > r.Start.Line {
		end = len(line)
	}
	var b strings.Builder
	for _, c := range line[:start] {
		if c == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteByte('^')
	if width := utf8.RuneCountInString(line[start:end]); width > 1 {
		b.WriteString(strings.Repeat("~", width-1))
	}
	return b.String()
}
