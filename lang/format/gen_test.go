package format

import (
	"strings"
	"testing"
)

// gen writes a valid .moe file chosen by the bytes it reads: every construct of the
// grammar, with comments, blank lines, odd spacing and line breaks wherever the language
// allows them. Random bytes rarely parse, so FuzzFormatGenerated feeds the formatter's
// properties through gen instead.
type gen struct {
	in    []byte
	b     strings.Builder
	depth int
}

func (g *gen) byte() byte {
	if len(g.in) == 0 {
		return 0
	}
	c := g.in[0]
	g.in = g.in[1:]
	return c
}

func (g *gen) n(k int) int { return int(g.byte()) % k }

func (g *gen) pick(s ...string) string { return s[g.n(len(s))] }

func (g *gen) ws() {
	g.b.WriteString(g.pick(" ", " ", "  ", "\t", " "))
}

func (g *gen) opt() {
	if g.n(3) == 0 {
		g.ws()
	}
}

func (g *gen) comment() string {
	return g.pick("// c", "//", "// a comment", "//x // y", "// \"quoted\" { [ (", "//é")
}

// newline ends a line, sometimes with a comment, and indents the next one (never column
// 1 inside brackets, where a declaration keyword would resynchronise the parser).
func (g *gen) newline() {
	if g.n(3) == 0 {
		g.opt()
		g.b.WriteString(g.comment())
	}
	g.b.WriteString(g.pick("\n", "\n", "\n\n", "\r\n", "\n  \n"))
	if g.n(4) == 0 {
		g.b.WriteString("// own line\n")
	}
	g.b.WriteString(strings.Repeat(" ", 1+g.n(4)))
}

func (g *gen) ident() string {
	return g.pick("vocab", "d_model", "heads", "x", "a100_40gb", "gelu", "true", "cpu", "k_2", "_u")
}

func (g *gen) file() string {
	for i, n := 0, g.n(4); i < n; i++ {
		if g.n(3) == 0 {
			g.b.WriteString(g.comment() + "\n")
		}
		if g.n(4) == 0 {
			g.b.WriteString("import" + g.pick(" ", "  ") + `"f` + g.pick("", "/x", " y") + `.moe"`)
		} else {
			g.block(true)
		}
		g.b.WriteString(g.pick("\n", "\n\n", "\n\n\n", " // after\n", ";\n"))
	}
	return g.b.String()
}

func (g *gen) block(top bool) {
	if top {
		g.b.WriteString(g.pick("model", "cluster", "train", "serve", "compress"))
	} else {
		g.b.WriteString(g.pick("attention", "ffn", "moe", "stage"))
	}
	if g.n(2) == 0 {
		g.ws()
		g.b.WriteString(g.ident())
	}
	for _, kw := range []string{"extends", "on", "from"} {
		if g.n(4) == 0 {
			g.ws()
			g.b.WriteString(kw)
			g.ws()
			g.b.WriteString(g.ident())
		}
	}
	g.opt()
	g.b.WriteString("{")
	g.depth++
	g.entries(top || g.depth < 3)
	g.depth--
	g.b.WriteString("}")
}

// entries writes a block body (or a brace call's, when blocks is false) up to the `}`.
func (g *gen) entries(blocks bool) {
	n := g.n(5)
	if n > 0 || g.n(2) == 0 {
		g.newline()
	}
	for i := 0; i < n; i++ {
		isBlock := blocks && g.n(4) == 0
		if isBlock {
			g.block(false)
		} else {
			g.b.WriteString(g.ident())
			g.opt()
			g.b.WriteString("=")
			g.opt()
			g.expr()
		}
		if i == n-1 {
			if g.n(2) == 0 {
				g.newline()
			} else {
				g.opt()
			}
			continue
		}
		switch {
		case isBlock && g.n(3) == 0:
			g.opt() // a `}` is separator enough
		case g.n(2) == 0:
			g.opt()
			g.b.WriteString(";")
			g.opt()
		default:
			g.newline()
		}
	}
}

func (g *gen) expr() {
	if g.depth > 6 {
		g.b.WriteString("1")
		return
	}
	g.depth++
	defer func() { g.depth-- }()
	switch g.n(12) {
	case 0, 1:
		g.b.WriteString(g.pick("150k", "3B", "1.6T", "40GiB", "1TB", "1.6Tbps", "2TB/s", "1e-4", "0.5", "2048", "312TFLOPS", "007", "1.5E+3"))
	case 2:
		g.b.WriteString(g.pick(`"plain"`, `"tab\there"`, `"q\"b\\"`, `"\u00e9"`, `"\x41\xff"`, `""`, `"é"`))
	case 3, 4:
		g.b.WriteString(g.ident())
	case 5:
		g.b.WriteString(g.pick("-", "+"))
		g.primary()
	case 6, 7:
		g.expr()
		g.opt()
		g.b.WriteString(g.pick("+", "-", "*", "/"))
		g.opt()
		g.primary()
	default:
		g.primary()
	}
}

// primary writes an operand that binds tighter than any operator.
func (g *gen) primary() {
	switch g.n(6) {
	case 0:
		g.b.WriteString("(")
		g.inside()
		g.expr()
		g.inside()
		g.b.WriteString(")")
	case 1:
		g.b.WriteString("[")
		g.inside()
		for i, n := 0, g.n(4); i < n; i++ {
			if i > 0 {
				g.b.WriteString(",")
				g.inside()
			}
			g.expr()
		}
		g.inside()
		g.b.WriteString("]")
	case 2:
		g.b.WriteString(g.pick("zero", "copy", "f", "unified_cache"))
		g.b.WriteString("(")
		g.inside()
		n := g.n(4)
		for i := 0; i < n; i++ {
			if i > 0 {
				g.b.WriteString(",")
				g.inside()
			}
			if g.n(2) == 0 {
				g.b.WriteString(g.ident())
				g.opt()
				g.b.WriteString("=")
				g.opt()
			}
			g.expr()
		}
		g.inside()
		g.b.WriteString(")")
	case 3:
		g.b.WriteString(g.pick("adamw", "opt"))
		g.opt()
		g.b.WriteString("{")
		g.entries(false)
		g.b.WriteString("}")
	default:
		g.b.WriteString(g.pick("1", "x", "2k", `"s"`))
	}
}

// inside writes what may separate tokens inside ( ) or [ ]: nothing, spaces, or a line
// break, possibly after a comment.
func (g *gen) inside() {
	switch g.n(4) {
	case 0:
		g.ws()
	case 1:
		g.newline()
	}
}

func TestGenerated(t *testing.T) {
	// A fixed sweep so the property runs in every `go test`, not only when fuzzing.
	for seed := 0; seed < 300; seed++ {
		in := make([]byte, 200)
		x := uint32(seed*2654435761 + 1)
		for i := range in {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			in[i] = byte(x)
		}
		src := (&gen{in: in}).file()
		check(t, []byte(src))
	}
}

func FuzzFormatGenerated(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("some seed bytes to start from: 0123456789abcdef"))
	f.Fuzz(func(t *testing.T, in []byte) {
		check(t, []byte((&gen{in: in}).file()))
	})
}
