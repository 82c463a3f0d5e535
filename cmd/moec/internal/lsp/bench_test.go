package lsp

import (
	"os"
	"testing"
)

// BenchmarkKeystroke is one keystroke in models/hunyuan1t.moe (a 1T-parameter model with
// its cluster, curriculum and serve block): a didChange that edits one character, and the
// diagnostics the server publishes for it, over real JSON-RPC. The target is 50 ms.
func BenchmarkKeystroke(b *testing.B) {
	src, err := os.ReadFile("../../../../models/hunyuan1t.moe")
	if err != nil {
		b.Fatal(err)
	}
	c := startServer(b, Options{})
	c.initialize()
	c.open("hunyuan1t.moe", string(src))
	// Line 17 is `  layers         = 26`: type 4 over the 6 and back.
	edit := func(version int, digit string) {
		c.notify("textDocument/didChange", map[string]any{
			"textDocument": map[string]any{"uri": uriOf("hunyuan1t.moe"), "version": version},
			"contentChanges": []any{map[string]any{
				"range": map[string]any{"start": map[string]int{"line": 17, "character": 20}, "end": map[string]int{"line": 17, "character": 21}},
				"text":  digit,
			}},
		}, "")
		for {
			msg, ok := c.read()
			if !ok {
				b.Fatal("the server stopped")
			}
			if msg["method"] == "textDocument/publishDiagnostics" {
				if p := msg["params"].(map[string]any); p["version"] == float64(version) {
					if d := p["diagnostics"].([]any); len(d) != 0 {
						b.Fatalf("diagnostics on a valid edit: %v", d)
					}
					break
				}
			}
		}
		c.transcript.Reset()
	}
	edit(2, "6")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		edit(3+i, []string{"4", "6"}[i%2])
	}
}
