package check

import (
	"fmt"
	"io"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
)

// Explain writes every resolved value of p with where it came from, one per line in
// declaration order, aligned for reading:
//
//	model tiny.d_model                = 128        written  tiny.moe:3:3
//	model tiny.ffn.hidden             = 512        derived  4 * d_model
//	model tiny.attention.heads        = 4          inherited  model big
//
// The text is stable (golden tests hold it), so tools may diff it. Write errors are
// ignored, as with fmt.Fprintf to a terminal; write to a buffer to check them.
func Explain(w io.Writer, p *program.Program) {
	pathW, valW := 0, 0
	for _, e := range p.Explain {
		pathW = max(pathW, len(e.Path))
		valW = max(valW, len(e.Value))
	}
	pathW, valW = min(pathW, 48), min(valW, 24)
	for _, e := range p.Explain {
		line := fmt.Sprintf("%-*s = %-*s  %-9s %s", pathW, e.Path, valW, e.Value, e.Source, e.From)
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}
