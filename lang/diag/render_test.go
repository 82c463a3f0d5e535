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
		d: Diagnostic{Severity: Error, Code: "E0201", Message: "unknown key `haeds` in block `attention`",
			Range: Range{File: "m.moe", Start: pos(27, 3, 5), End: pos(32, 3, 10)},
			Notes: []string{"keys of attention are heads, kv_heads, ..."}, Suggestion: "did you mean `heads`?"},
		want: "m.moe:3:5: error[E0201]: unknown key `haeds` in block `attention`\n" +
			" 3 |     haeds = 32\n" +
			"   |     ^~~~~\n" +
			"  = note: keys of attention are heads, kv_heads, ...\n" +
			"  = help: did you mean `heads`?\n",
	}, {
		name: "tabs are kept and characters counted, not bytes",
		d: Diagnostic{Severity: Warning, Code: "W9201", Message: "w",
			Range: Range{File: "m.moe", Start: pos(43, 4, 6), End: pos(50, 4, 13)}},
		want: "m.moe:4:6: warning[W9201]: w\n" +
			" 4 | \tx = \"été\" + 1\n" +
			"   | \t    ^~~~~\n",
	}, {
		name: "multi-line range is clipped to its first line",
		d: Diagnostic{Severity: Error, Code: "E0105", Message: "m",
			Range: Range{File: "m.moe", Start: pos(12, 2, 3), End: pos(62, 5, 4)}},
		want: "m.moe:2:3: error[E0105]: m\n" +
			" 2 |   attention {\n" +
			"   |   ^~~~~~~~~~~\n",
	}, {
		name: "empty range gets one caret, even past the end of the line",
		d: Diagnostic{Severity: Error, Code: "E0113", Message: "m",
			Range: Range{File: "m.moe", Start: pos(9, 1, 10), End: pos(9, 1, 10)}},
		want: "m.moe:1:10: error[E0113]: m\n" +
			" 1 | model m {\n" +
			"   |          ^\n",
	}, {
		name: "no position: header and notes only",
		d:    Diagnostic{Severity: Error, Code: "E0601", Message: "m", Notes: []string{"n"}},
		want: "error[E0601]: m\n  = note: n\n",
	}, {
		name: "line outside the source",
		d:    Diagnostic{Severity: Error, Code: "E0101", Message: "m", Range: Range{File: "m.moe", Start: pos(0, 99, 1)}},
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
		{Severity: Error, Code: "E0101", Message: "a", Range: Range{File: "a.moe", Start: pos(0, 1, 1), End: pos(1, 1, 2)}},
		{Severity: Error, Code: "E0101", Message: "b", Range: Range{File: "b.moe", Start: pos(0, 1, 1), End: pos(2, 1, 3)}},
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
			l = append(l, Diagnostic{Severity: Error, Code: "E0202", Message: "dup",
				Range: Range{File: "d.moe", Start: pos(off+2, i+1, 3), End: pos(off+7, i+1, 8)}})
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
		d := Diagnostic{Severity: Error, Code: "E0116", Message: "m",
			Range: Range{File: "c.moe", Start: pos(tc.start-1, 1, tc.start), End: pos(tc.end-1, 1, tc.end)}}
		var b bytes.Buffer
		Render(&b, d, []byte(chain+"\n"))
		want := "c.moe:1:" + fmt.Sprint(tc.start) + ": error[E0116]: m\n 1 | " + tc.wantShown + "\n   | " + tc.wantCaret + "\n"
		if b.String() != want {
			t.Errorf("%s:\n--- got\n%s--- want\n%s", tc.name, b.String(), want)
		}
	}
	// The end of a long line: no "…" after it, and multi-byte characters are not split.
	line := strings.Repeat("é", 300)
	d := Diagnostic{Severity: Error, Code: "E0101", Message: "m",
		Range: Range{File: "c.moe", Start: pos(598, 1, 599), End: pos(600, 1, 601)}}
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
	for _, c := range []Code{UnexpectedToken, UnterminatedString, BadNumber, UnknownSuffix, MissingRBrace,
		MissingEquals, IllegalCharacter, NestingTooDeep, UnmatchedClose, MissingClose, BadEscape,
		AssignOutsideBlock, MissingValue, ImportNotString, MissingSeparator, ExprTooLong, TooManyRepeats, InternalParserError} {
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
		l = append(l, Diagnostic{Severity: Error, Code: "E0202", Message: "dup",
			Range: Range{File: "d.moe", Start: pos(off+2, i+1, 3), End: pos(off+7, i+1, 8)}})
	}
	sources := map[string][]byte{"d.moe": []byte(src.String())}
	for b.Loop() {
		RenderAll(io.Discard, l, sources)
	}
}
