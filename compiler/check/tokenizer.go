package check

import (
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// resolveTokenizer reads a train block's tokenizer entry: "bytes" (the default) or the path
// of a tokenizer.json. Whether the file is there and usable is for internal/driver, which
// reads files; here the value itself is checked.
func (c *checker) resolveTokenizer(t *program.Train, s *scope) {
	if s.entries["tokenizer"] == nil {
		return
	}
	r := s.rangeOf("tokenizer")
	t.TokenizerDecl = program.Source{File: r.File, Start: r.Start, End: r.End}
	v := s.str("tokenizer")
	switch {
	case strings.TrimSpace(v) == "":
		d := c.errorf(diag.CodeBadTokenizer, r, "tokenizer is empty")
		d.Suggestion = `write "bytes" (each byte a token), or the path of a Hugging Face tokenizer.json`
	case strings.EqualFold(v, program.TokenizerBytes) && v != program.TokenizerBytes:
		d := c.errorf(diag.CodeBadTokenizer, r, "tokenizer %q: byte-level tokens are written \"bytes\"", v)
		d.Suggestion = `write "bytes"`
	case v != program.TokenizerBytes:
		t.Tokenizer = v
	}
}
