package format

import (
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
)

// File parses src and returns it formatted. A file with syntax errors is not formatted:
// the tree holds only what the parser could recover, and printing it would drop the
// rest of the user's text, so File returns nil and the diagnostics instead.
func File(name string, src []byte) ([]byte, diag.List) {
	f, diags := parse.File(name, src)
	if diags.HasErrors() {
		return nil, diags
	}
	return Source(f, src), diags
}
