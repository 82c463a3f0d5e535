package diag

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// Render writes d for a person to read:
//
//	model.moe:3:3: error[E0202]: `d_model` is written twice in model m
//	 2 |   d_model = 128
//	   |   ------- first written here
//	 3 |   d_model = 256
//	   |   ^~~~~~~
//	  = note: ...
//	  = help: ...
//
// src is the file d points into; without it (or when the position lies outside it) only
// the first line, the labels as notes and the notes are written. The caret line marks
// exactly the diagnostic's subject; each label in the same file marks its own range with
// dashes and its message, on its own line in line order (as rustc's secondary labels do);
// a label elsewhere is written as a note `file:line:col: message`. A range that runs over
// several lines is marked to the end of its first line. Write errors are ignored, as
// fmt.Fprintf callers usually do, because rendering goes to a terminal or a buffer; use a
// bytes.Buffer to check them.
func Render(w io.Writer, d Diagnostic, src []byte) {
	render(w, d, func(file string, n int) (string, bool) {
		if file != d.Subject.File {
			return "", false
		}
		return sourceLine(src, n)
	})
}

// lineSource returns line n (1-based) of file, without its line ending, when it has it.
type lineSource func(file string, n int) (string, bool)

// mark is one range the snippet marks: the subject (primary) or a label.
type mark struct {
	r       Range
	primary bool
	message string
}

// render writes d with the source lines lines gives.
func render(w io.Writer, d Diagnostic, lines lineSource) {
	fmt.Fprintln(w, d.String())
	var marks []mark
	var elsewhere []Label
	if _, ok := lines(d.Subject.File, d.Subject.Start.Line); ok && d.Subject.Start.IsValid() {
		marks = append(marks, mark{r: d.Subject, primary: true})
		for _, l := range d.Labels {
			if _, ok := lines(l.Range.File, l.Range.Start.Line); ok && l.Range.File == d.Subject.File && l.Range.Start.IsValid() {
				marks = append(marks, mark{r: l.Range, message: l.Message})
			} else {
				elsewhere = append(elsewhere, l)
			}
		}
	} else {
		elsewhere = d.Labels
	}
	writeSnippet(w, marks, lines)
	for _, l := range elsewhere {
		if where := l.Range.String(); where != "" {
			fmt.Fprintf(w, "  = note: %s: %s\n", where, l.Message)
		} else {
			fmt.Fprintf(w, "  = note: %s\n", l.Message)
		}
	}
	for _, n := range d.Notes {
		fmt.Fprintf(w, "  = note: %s\n", strings.ReplaceAll(n, "\n", "\n          "))
	}
	if d.Suggestion != "" {
		fmt.Fprintf(w, "  = help: %s\n", d.Suggestion)
	}
}

// writeSnippet writes the source lines the marks point into, in line order, each followed
// by its marks: the subject's `^~~~` first, then each label's `----` and message. A line
// of "..." stands for the lines between two that are not next to each other.
func writeSnippet(w io.Writer, marks []mark, lines lineSource) {
	if len(marks) == 0 {
		return
	}
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].r.Start.Line < marks[j].r.Start.Line })
	width := len(fmt.Sprint(marks[len(marks)-1].r.Start.Line))
	gutter := strings.Repeat(" ", width+1)
	prev := 0
	for i := 0; i < len(marks); {
		n := marks[i].r.Start.Line
		if prev > 0 && n > prev+1 {
			fmt.Fprintln(w, "...") // lines left out between two marked ones
		}
		prev = n
		j := i
		for j < len(marks) && marks[j].r.Start.Line == n {
			j++
		}
		onLine := marks[i:j]
		// The window of a long line is placed around the subject when it is on the line.
		anchor := onLine[0].r
		for _, m := range onLine {
			if m.primary {
				anchor = m.r
			}
		}
		text, _ := lines(anchor.File, n)
		shown, shift, endCol := clipLine(text, anchor)
		fmt.Fprintf(w, " %*d | %s\n", width, n, shown)
		sort.SliceStable(onLine, func(a, b int) bool { return onLine[a].primary && !onLine[b].primary })
		for _, m := range onLine {
			r := shiftRange(m.r, shift, endCol)
			if m.primary {
				fmt.Fprintf(w, "%s | %s\n", gutter, markLine(shown, r, '^', '~'))
			} else {
				fmt.Fprintf(w, "%s | %s %s\n", gutter, markLine(shown, r, '-', '-'), m.message)
			}
		}
		i = j
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
	lines := func(file string, n int) (string, bool) {
		src := sources[file]
		ix, seen := indexes[file]
		if !seen {
			ix = indexLines(src)
			indexes[file] = ix
		}
		return ix.line(src, n)
	}
	for i, d := range list {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if i == MaxRendered {
			fmt.Fprintf(w, "too many errors (%d more)\n", len(list)-i)
			return
		}
		render(w, d, lines)
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
// r and marks what it left out with "…". It returns the shown text, the shift that moves
// a column of the line to its column in the shown text, and the column just past the
// window's last source byte (for shiftRange).
func clipLine(line string, r Range) (shown string, shift, endCol int) {
	if len(line) <= maxShownLine {
		return line, 0, len(line) + 1
	}
	from := min(max(r.Start.Col-1-maxShownLine/4, 0), len(line))
	for from > 0 && !utf8.RuneStart(line[from]) {
		from--
	}
	to := min(from+maxShownLine, len(line))
	for to < len(line) && !utf8.RuneStart(line[to]) {
		to--
	}
	shown = line[from:to]
	shift = -from
	if from > 0 {
		shown = "…" + shown
		shift += len("…")
	}
	endCol = len(shown) + 1
	if to < len(line) {
		shown += "…"
	}
	return shown, shift, endCol
}

// shiftRange moves r's columns by shift into a clipped line; a range running past the
// window (whose columns end before endCol) is marked to the window's end.
func shiftRange(r Range, shift, endCol int) Range {
	if shift == 0 && endCol > r.End.Col {
		return r
	}
	r.Start.Col += shift
	if r.End.Line == r.Start.Line {
		r.End.Col = min(r.End.Col+shift, endCol)
	}
	return r
}

// markLine builds the marker for r under line: first then rest for each further character
// (`^~~~` for a subject, `----` for a label). Columns count bytes, the marker counts
// characters, and tabs before the range are copied so the marker lines up however the
// terminal expands them.
func markLine(line string, r Range, first, rest byte) string {
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
	b.WriteByte(first)
	if width := utf8.RuneCountInString(line[start:end]); width > 1 {
		b.WriteString(strings.Repeat(string(rest), width-1))
	}
	return b.String()
}
