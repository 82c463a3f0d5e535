package diag

import (
	"bytes"
	"strings"
	"testing"

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
		AssignOutsideBlock, MissingValue, ImportNotString, MissingSeparator, InternalParserError} {
		if !seen[c] || !strings.HasPrefix(string(c), "E01") {
			t.Errorf("syntax code %s not registered in the E01xx range", c)
		}
	}
}
