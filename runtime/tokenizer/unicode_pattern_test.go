package tokenizer

import (
	"testing"
	"unicode"
)

func TestWithUnicodeAdditions(t *testing.T) {
	pd := unicodeAdditions("Pd")
	if pd == "" {
		t.Fatal("Unicode 16.0 assigned a dash (U+10D6E GARAY HYPHEN) that the table lacks")
	}
	for _, c := range []struct{ expr, want string }{
		{`\p{Pd}+`, `[\p{Pd}` + pd + `]+`},
		{`\P{Pd}`, `[^\p{Pd}` + pd + `]`},
		{`[^\r\n\p{Pd}]?x`, `[^\r\n\p{Pd}` + pd + `]?x`},
		{`[\P{Pd}]`, `[\P{Pd}]`},
		{`[]\p{Pd}]`, `[]\p{Pd}` + pd + `]`},
		{`[^]\p{Pd}]`, `[^]\p{Pd}` + pd + `]`},
		{`[a-z-[\p{Pd}]]`, `[a-z-[\p{Pd}` + pd + `]]`},
		{`\[\p{Pd}\]`, `\[[\p{Pd}` + pd + `]\]`},
		{`\\p{Pd}`, `\\p{Pd}`},
		{`\p{Zs}\s+(?!\S)`, `\p{Zs}\s+(?!\S)`},
		{`\p{Pd`, `\p{Pd`},
	} {
		if got := withUnicodeAdditions(c.expr); got != c.want {
			t.Errorf("withUnicodeAdditions(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// TestUnicode16Categories: the split patterns class the code points of Unicode 15.1 and 16.0
// as the `tokenizers` package does (Oniguruma's Unicode 16.0 tables), not as unassigned,
// and not those of 17.0; every code point the table adds is one Go's tables leave out.
func TestUnicode16Categories(t *testing.T) {
	for _, c := range []struct {
		expr string
		r    rune
		want bool
	}{
		{`^\p{So}$`, 0x1FA89, true}, // HARP, 16.0
		{`^\p{S}$`, 0x1CC00, true},  // a legacy-computing symbol, 16.0
		{`^\p{Lo}$`, 0x2EBF0, true}, // CJK Extension I, 15.1
		{`^\p{L}$`, 0x2EBF0, true},  //
		{`^\p{Nd}$`, 0x10D40, true}, // GARAY DIGIT ZERO, 16.0
		{`^\p{N}$`, 0x10D40, true},  //
		{`^[^\p{L}\p{N}]$`, 0x2EBF0, false},
		{`^\P{L}$`, 0x2EBF0, false},
		{`^\p{L}$`, 0x323B0, false}, // CJK Extension J, 17.0
		{`^\p{Lo}$`, 0x4E00, true},  // Go's own tables still count
	} {
		p, err := compileRegex(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.matches(string(c.r))
		if err != nil {
			t.Fatal(err)
		}
		if (len(got) == 1) != c.want {
			t.Errorf("%s on U+%04X: matched %v, want %v", c.expr, c.r, len(got) == 1, c.want)
		}
	}
	all := []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs}
	for _, cat := range []string{"L", "Ll", "Lm", "Lo", "Lu", "M", "Mc", "Mn", "N", "Nd", "P", "Pd", "Po", "S", "Sm", "So"} {
		members := []rune(unicodeAdditions(cat))
		if len(members) == 0 {
			t.Errorf("no additions for %s", cat)
		}
		for i := 0; i < len(members); i++ {
			lo, hi := members[i], members[i]
			if i+2 < len(members) && members[i+1] == '-' {
				hi = members[i+2]
				i += 2
			}
			for r := lo; r <= hi; r++ {
				if unicode.In(r, all...) {
					t.Errorf("%s: U+%04X is in Go's tables already", cat, r)
				}
			}
		}
	}
}
