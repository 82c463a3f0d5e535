package diag

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moec-dev/moec/lang/ast"
)

func pos(off, line, col int) ast.Pos { return ast.Pos{Offset: off, Line: line, Col: col} }

func TestRender(t *testing.T) {
	src := []byte("model m {\n  attention {\n    haeds = 32\n\tx = \"été\" + 1\n  }\n}\n")
	for _, tc := range []struct {
		name string
		d    Diagnostic
		want string
	}{{
		name: "range with suggestion and note",
		d: Diagnostic{Severity: Error, Code: "E0201", Summary: "unknown key `haeds` in block `attention`",
			Subject: Range{File: "m.moe", Start: pos(27, 3, 5), End: pos(32, 3, 10)},
			Notes:   []string{"keys of attention are heads, kv_heads, ..."}, Suggestion: "did you mean `heads`?"},
		want: "m.moe:3:5: error[E0201]: unknown key `haeds` in block `attention`\n" +
			" 3 |     haeds = 32\n" +
			"   |     ^~~~~\n" +
			"  = note: keys of attention are heads, kv_heads, ...\n" +
			"  = help: did you mean `heads`?\n",
	}, {
		name: "tabs are kept and characters counted, not bytes",
		d: Diagnostic{Severity: Warning, Code: "W9201", Summary: "w",
			Subject: Range{File: "m.moe", Start: pos(43, 4, 6), End: pos(50, 4, 13)}},
		want: "m.moe:4:6: warning[W9201]: w\n" +
			" 4 | \tx = \"été\" + 1\n" +
			"   | \t    ^~~~~\n",
	}, {
		name: "multi-line range is clipped to its first line",
		d: Diagnostic{Severity: Error, Code: "E0105", Summary: "m",
			Subject: Range{File: "m.moe", Start: pos(12, 2, 3), End: pos(62, 5, 4)}},
		want: "m.moe:2:3: error[E0105]: m\n" +
			" 2 |   attention {\n" +
			"   |   ^~~~~~~~~~~\n",
	}, {
		name: "empty range gets one caret, even past the end of the line",
		d: Diagnostic{Severity: Error, Code: "E0113", Summary: "m",
			Subject: Range{File: "m.moe", Start: pos(9, 1, 10), End: pos(9, 1, 10)}},
		want: "m.moe:1:10: error[E0113]: m\n" +
			" 1 | model m {\n" +
			"   |          ^\n",
	}, {
		name: "no position: header and notes only",
		d:    Diagnostic{Severity: Error, Code: "E0601", Summary: "m", Notes: []string{"n"}},
		want: "error[E0601]: m\n  = note: n\n",
	}, {
		name: "line outside the source",
		d:    Diagnostic{Severity: Error, Code: "E0101", Summary: "m", Subject: Range{File: "m.moe", Start: pos(0, 99, 1)}},
		want: "m.moe:99:1: error[E0101]: m\n",
	}} {
		var b bytes.Buffer
		Render(&b, tc.d, src)
		if b.String() != tc.want {
			t.Errorf("%s:\n--- got\n%s--- want\n%s", tc.name, b.String(), tc.want)
		}
	}
}

func TestRenderAll(t *testing.T) {
	l := List{
		{Severity: Error, Code: "E0101", Summary: "a", Subject: Range{File: "a.moe", Start: pos(0, 1, 1), End: pos(1, 1, 2)}},
		{Severity: Error, Code: "E0101", Summary: "b", Subject: Range{File: "b.moe", Start: pos(0, 1, 1), End: pos(2, 1, 3)}},
	}
	var b bytes.Buffer
	RenderAll(&b, l, map[string][]byte{"a.moe": []byte("x\n"), "b.moe": []byte("yy")})
	want := "a.moe:1:1: error[E0101]: a\n 1 | x\n   | ^\n\nb.moe:1:1: error[E0101]: b\n 1 | yy\n   | ^~\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if strings.Count(b.String(), "error[") != 2 {
		t.Error("lost a diagnostic")
	}
}

// TestRenderAllStopsAfterMaxRendered: like Go's compiler, RenderAll writes MaxRendered
// diagnostics and then one line that counts the rest; 100,000 duplicate keys are no
// longer 100,000 rendered source lines.
func TestRenderAllStopsAfterMaxRendered(t *testing.T) {
	for _, n := range []int{1, MaxRendered, MaxRendered + 1, 100000} {
		var src strings.Builder
		var l List
		for i := 0; i < n; i++ {
			off := src.Len()
			src.WriteString("  vocab = 1\n")
			l = append(l, Diagnostic{Severity: Error, Code: "E0202", Summary: "dup",
				Subject: Range{File: "d.moe", Start: pos(off+2, i+1, 3), End: pos(off+7, i+1, 8)}})
		}
		var b bytes.Buffer
		RenderAll(&b, l, map[string][]byte{"d.moe": []byte(src.String())})
		out := b.String()
		shown := min(n, MaxRendered)
		if got := strings.Count(out, "error[E0202]"); got != shown {
			t.Errorf("n=%d: %d diagnostics written, want %d", n, got, shown)
		}
		tail := fmt.Sprintf("\n\ntoo many errors (%d more)\n", n-MaxRendered)
		if n > MaxRendered && !strings.HasSuffix(out, tail) {
			t.Errorf("n=%d: output does not end %q:\n...%s", n, tail, out[max(0, len(out)-200):])
		}
		if n <= MaxRendered && strings.Contains(out, "too many errors") {
			t.Errorf("n=%d: says too many errors", n)
		}
		// The last diagnostic written points at its own line.
		if want := fmt.Sprintf(" %d |   vocab = 1\n", shown); !strings.Contains(out, want) {
			t.Errorf("n=%d: no %q in the output", n, want)
		}
	}
}

// TestRenderLongLine: a diagnostic in a line longer than maxShownLine shows a window of
// it around the range, with the caret still under the range.
func TestRenderLongLine(t *testing.T) {
	chain := "  vocab = 1" + strings.Repeat("+1", 600000) // 1.2 MB on one line
	for _, tc := range []struct {
		name       string
		start, end int // 1-based columns of the range
		wantShown  string
		wantCaret  string
	}{{
		name: "deep in the line", start: 20012, end: 20013,
		wantShown: "…" + chain[20011-50:20011-50+200] + "…",
		wantCaret: strings.Repeat(" ", 51) + "^",
	}, {
		name: "at the start", start: 3, end: 8,
		wantShown: chain[:200] + "…",
		wantCaret: "  ^~~~~",
	}, {
		name: "a range running past the window", start: 20012, end: 40000,
		wantShown: "…" + chain[20011-50:20011-50+200] + "…",
		wantCaret: strings.Repeat(" ", 51) + "^" + strings.Repeat("~", 149),
	}} {
		d := Diagnostic{Severity: Error, Code: "E0116", Summary: "m",
			Subject: Range{File: "c.moe", Start: pos(tc.start-1, 1, tc.start), End: pos(tc.end-1, 1, tc.end)}}
		var b bytes.Buffer
		Render(&b, d, []byte(chain+"\n"))
		want := "c.moe:1:" + fmt.Sprint(tc.start) + ": error[E0116]: m\n 1 | " + tc.wantShown + "\n   | " + tc.wantCaret + "\n"
		if b.String() != want {
			t.Errorf("%s:\n--- got\n%s--- want\n%s", tc.name, b.String(), want)
		}
	}
	// The end of a long line: no "…" after it, and multi-byte characters are not split.
	line := strings.Repeat("é", 300)
	d := Diagnostic{Severity: Error, Code: "E0101", Summary: "m",
		Subject: Range{File: "c.moe", Start: pos(598, 1, 599), End: pos(600, 1, 601)}}
	var b bytes.Buffer
	Render(&b, d, []byte(line))
	shown := strings.Split(b.String(), "\n")[1]
	if !utf8.ValidString(shown) || strings.HasSuffix(shown, "…") || !strings.HasPrefix(shown, " 1 | …é") {
		t.Errorf("end of a long line shown as %q", shown)
	}
	if caret := strings.Split(b.String(), "\n")[2]; !strings.HasSuffix(caret, "^") || utf8.RuneCountInString(caret) != utf8.RuneCountInString(shown) {
		t.Errorf("caret %q does not end under the last character of %q", caret, shown)
	}
}

// TestLineIndex: RenderAll's line index (built once per file) gives the lines Render
// finds by scanning, whatever the line endings.
func TestLineIndex(t *testing.T) {
	for _, src := range []string{"", "a", "a\n", "a\nbb\n\nccc", "a\r\nb\r\n", "\n\n", "x\ny"} {
		ix := indexLines([]byte(src))
		for n := -1; n <= strings.Count(src, "\n")+3; n++ {
			gotLine, gotOK := ix.line([]byte(src), n)
			wantLine, wantOK := sourceLine([]byte(src), n)
			if gotLine != wantLine || gotOK != wantOK {
				t.Errorf("%q line %d: index gives %q, %v; scan gives %q, %v", src, n, gotLine, gotOK, wantLine, wantOK)
			}
		}
	}
	if _, ok := indexLines(nil).line(nil, 1); ok {
		t.Error("a missing source has no lines")
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"heads", "kv_heads", "head_dim", "window", "bias", "qkv_bias", "share_weights", "talking_heads"}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"haeds", "heads", true},      // swap of neighbours counts once
		{"heads", "heads", true},      // exact
		{"HEADS", "heads", true},      // case only
		{"head", "heads", true},       // deletion
		{"kv_head", "kv_heads", true}, // deletion
		{"share_weight", "share_weights", true},
		{"talkingheads", "talking_heads", true},
		{"windw", "window", true},
		{"x", "", false},       // too short to guess
		{"experts", "", false}, // nothing close
		{"bais", "bias", true},
		{"", "", false},
	} {
		got, ok := Closest(tc.name, keys)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Closest(%q) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := Closest("heads", nil); ok {
		t.Error("no candidates must give no suggestion")
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"ab", "ba", 1}, {"abc", "acb", 1}, {"ca", "abc", 3}, {"été", "ete", 2},
	} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := distance(tc.b, tc.a); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d (symmetry)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestSyntaxCodesRegistered(t *testing.T) {
	seen := map[Code]bool{}
	for _, info := range Registry() {
		if seen[info.Code] {
			t.Errorf("code %s registered twice", info.Code)
		}
		seen[info.Code] = true
		if info.Summary == "" {
			t.Errorf("code %s has no summary", info.Code)
		}
	}
	for _, c := range []Code{CodeUnexpectedToken, CodeUnterminatedString, CodeBadNumber, CodeUnknownSuffix, CodeMissingRBrace,
		CodeMissingEquals, CodeIllegalCharacter, CodeNestingTooDeep, CodeUnmatchedClose, CodeMissingClose, CodeBadEscape,
		CodeAssignOutsideBlock, CodeMissingValue, CodeImportNotString, CodeMissingSeparator, CodeExprTooLong, CodeTooManyRepeats, CodeInternalParserError} {
		if !seen[c] || !strings.HasPrefix(string(c), "E01") {
			t.Errorf("syntax code %s not registered in the E01xx range", c)
		}
	}
}

// BenchmarkRenderAll renders 100,000 diagnostics, one per line of a 100,000-line file:
// the duplicate-key case that took over a minute when each diagnostic rescanned its file.
func BenchmarkRenderAll(b *testing.B) {
	const n = 100000
	var src strings.Builder
	var l List
	for i := 0; i < n; i++ {
		off := src.Len()
		src.WriteString("  vocab = 1\n")
		l = append(l, Diagnostic{Severity: Error, Code: "E0202", Summary: "dup",
			Subject: Range{File: "d.moe", Start: pos(off+2, i+1, 3), End: pos(off+7, i+1, 8)}})
	}
	sources := map[string][]byte{"d.moe": []byte(src.String())}
	for b.Loop() {
		RenderAll(io.Discard, l, sources)
	}
}

// TestRenderLabels: a label in the subject's file marks its own line with dashes and its
// message, in line order beside the subject's caret, even on the subject's own line; a
// label in another file, or one without its source, is a note that names its place.
func TestRenderLabels(t *testing.T) {
	src := []byte("model m {\n  d_model = 128\n  d_model = 256; zero(2, stage = 3)\n}\n")
	d := Diagnostic{Severity: Error, Code: "E0202", Summary: "`d_model` is written twice in model m",
		Subject: Range{File: "m.moe", Start: pos(26, 3, 3), End: pos(33, 3, 10)}}
	d.Label(Range{File: "m.moe", Start: pos(12, 2, 3), End: pos(19, 2, 10)}, "first written here")
	d.Label(Range{File: "m.moe", Start: pos(41, 3, 18), End: pos(45, 3, 22)}, "zero here")
	d.Label(Range{File: "base.moe", Start: pos(0, 7, 5), End: pos(3, 7, 8)}, "inherited from here")
	want := "m.moe:3:3: error[E0202]: `d_model` is written twice in model m\n" +
		" 2 |   d_model = 128\n" +
		"   |   ------- first written here\n" +
		" 3 |   d_model = 256; zero(2, stage = 3)\n" +
		"   |   ^~~~~~~\n" +
		"   |                  ---- zero here\n" +
		"  = note: base.moe:7:5: inherited from here\n"
	var b bytes.Buffer
	Render(&b, d, src)
	if b.String() != want {
		t.Errorf("--- got\n%s--- want\n%s", b.String(), want)
	}
	b.Reset()
	Render(&b, d, nil)
	want = "m.moe:3:3: error[E0202]: `d_model` is written twice in model m\n" +
		"  = note: m.moe:2:3: first written here\n" +
		"  = note: m.moe:3:18: zero here\n" +
		"  = note: base.moe:7:5: inherited from here\n"
	if b.String() != want {
		t.Errorf("without source:\n--- got\n%s--- want\n%s", b.String(), want)
	}
	// The gutter is as wide as the widest line number shown, and "..." stands for lines
	// left out.
	long := []byte(strings.Repeat("\n", 8) + "a = 1\n b = 2\n")
	d = Diagnostic{Severity: Error, Code: "E0202", Summary: "s", Subject: Range{File: "l.moe", Start: pos(0, 10, 2), End: pos(0, 10, 3)}}
	d.Label(Range{File: "l.moe", Start: pos(0, 1, 1), End: pos(0, 1, 1)}, "far")
	b.Reset()
	RenderAll(&b, List{d}, map[string][]byte{"l.moe": []byte("x" + string(long))})
	want = "l.moe:10:2: error[E0202]: s\n  1 | x\n    | - far\n...\n 10 |  b = 2\n    |  ^\n"
	if b.String() != want {
		t.Errorf("gap:\n--- got\n%s--- want\n%s", b.String(), want)
	}
	d = Diagnostic{Severity: Error, Code: "E0202", Summary: "s", Subject: Range{File: "l.moe", Start: pos(0, 10, 2), End: pos(0, 10, 3)}}
	d.Label(Range{File: "l.moe", Start: pos(0, 9, 1), End: pos(0, 9, 2)}, "here")
	b.Reset()
	RenderAll(&b, List{d}, map[string][]byte{"l.moe": long})
	want = "l.moe:10:2: error[E0202]: s\n  9 | a = 1\n    | - here\n 10 |  b = 2\n    |  ^\n"
	if b.String() != want {
		t.Errorf("gutter:\n--- got\n%s--- want\n%s", b.String(), want)
	}
}
