package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// lspFrames is the script command `lspframes IN OUT`: it frames each non-empty line of IN
// (one JSON-RPC message) with a Content-Length header, as an editor writes to `moec lsp`,
// and writes the stream to OUT.
func lspFrames(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: lspframes IN OUT")
	}
	var b bytes.Buffer
	for _, line := range strings.Split(ts.ReadFile(args[0]), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(line), line)
		}
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), b.Bytes(), 0o644))
}
