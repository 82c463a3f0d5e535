package lsp

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNoPanicOnPartialFiles runs every feature at many positions of every shipped .moe file
// and of its prefixes (a file as it is while being typed, cut anywhere): none panics. (The
// server also recovers from a handler's panic, answering an internal error; this test holds
// the handlers to not needing that.)
func TestNoPanicOnPartialFiles(t *testing.T) {
	files, _ := filepath.Glob("../../../../models/*.moe")
	examples, _ := filepath.Glob("../../../../examples/*.moe")
	for _, path := range append(files, examples...) {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		step := max(len(src)/7, 1)
		for cut := step; cut <= len(src)+step; cut += step {
			text := src[:min(cut, len(src))]
			doc := newDocument("file:///ws/"+filepath.Base(path), 1, string(text))
			snap, err := analyze(doc, func(string) ([]byte, bool) { return nil, false })
			if err != nil {
				t.Fatalf("%s cut at %d: %v", path, cut, err)
			}
			v := &view{doc: doc, snap: snap, pos: positions{text: doc.text, lines: doc.lines}}
			_ = v.symbols()
			_, _ = v.format()
			_ = v.codeActions(v.pos.rangeOf(0, len(text)))
			for line := range doc.lines {
				for char := 0; char < 32; char += 4 {
					p := position{Line: line, Character: char}
					_ = v.hover(p)
					_ = v.definition(p)
					_ = v.references(p, true)
					_ = v.completion(p)
				}
			}
		}
	}
}
