package lsp

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

func (c *client) initialize() {
	c.t.Helper()
	c.request("initialize", map[string]any{"capabilities": map[string]any{}}, "")
	c.notify("initialized", map[string]any{}, "")
}

func (c *client) open(name, text string) {
	c.t.Helper()
	c.notify("textDocument/didOpen", map[string]any{"textDocument": map[string]any{
		"uri": uriOf(name), "languageId": "moe", "version": 1, "text": text,
	}}, name)
}

const smallModel = "model m {\n  vocab   = 256\n  d_model = 64\n  layers  = 2\n  seq_len = 64\n  attention { heads = 4 }\n}\n"

// TestLargeDocument opens a 10 MB document: the server keeps it, says once that it will not
// check it while typing, answers requests on it with null, and goes on serving.
func TestLargeDocument(t *testing.T) {
	c := startServer(t, Options{})
	c.initialize()
	var big strings.Builder
	for i := 0; big.Len() < 10<<20; i++ {
		fmt.Fprintf(&big, "model m%d {\n  vocab = 256\n  d_model = 64\n  layers = 2\n  seq_len = 64\n  attention { heads = 4 }\n}\n", i)
	}
	c.open("big.moe", big.String())
	c.notify("textDocument/didChange", map[string]any{
		"textDocument":   map[string]any{"uri": uriOf("big.moe"), "version": 2},
		"contentChanges": []any{map[string]any{"range": map[string]any{"start": map[string]int{"line": 0, "character": 0}, "end": map[string]int{"line": 0, "character": 0}}, "text": "// x\n"}},
	}, "")
	resp := c.request("textDocument/hover", map[string]any{"textDocument": map[string]any{"uri": uriOf("big.moe")}, "position": map[string]int{"line": 1, "character": 3}}, "")
	if resp["result"] != nil || resp["error"] != nil {
		t.Errorf("hover on a document too large to check = %v, want a null result", resp)
	}
	tr := c.transcript.String()
	if n := strings.Count(tr, "window/showMessage"); n != 1 {
		t.Errorf("the size warning came %d times, want once:\n%.2000s", n, tr)
	}
	c.open("small.moe", smallModel)
	resp = c.request("textDocument/hover", map[string]any{"textDocument": map[string]any{"uri": uriOf("small.moe")}, "position": map[string]int{"line": 2, "character": 3}}, "")
	if resp["result"] == nil {
		t.Errorf("hover on a small document after the large one = %v, want a result", resp)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestOversizedMessage sends a body over MaxMessage: the server skips it without holding it,
// logs why, and answers the next request.
func TestOversizedMessage(t *testing.T) {
	c := startServer(t, Options{})
	c.initialize()
	n := int64(MaxMessage + 1)
	if _, err := fmt.Fprintf(c.in, "Content-Length: %d\r\n\r\n", n); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c.in, io.LimitReader(zeros{}, n)); err != nil {
		t.Fatal(err)
	}
	resp := c.request("shutdown", nil, "")
	if _, ok := resp["result"]; !ok {
		t.Errorf("shutdown after an oversized message = %v, want a result", resp)
	}
	if !strings.Contains(c.transcript.String(), "over the limit") {
		t.Errorf("the oversized message was not logged:\n%s", c.transcript.String())
	}
}

// TestRequestStorm sends thousands of requests without waiting for answers: every one is
// answered, in the order sent. (The client writes from a goroutine: the server reads only
// as fast as it answers, so a client that never read would block, not grow the server.)
func TestRequestStorm(t *testing.T) {
	c := startServer(t, Options{})
	c.initialize()
	c.open("a.moe", smallModel)
	const n = 3000
	sent := make(chan error, 1)
	go func() {
		var b bytes.Buffer
		for i := 0; i < n; i++ {
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"textDocument/hover","params":{"textDocument":{"uri":%q},"position":{"line":%d,"character":3}}}`, 1000+i, uriOf("a.moe"), i%7)
			fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
		}
		_, err := c.in.Write(b.Bytes())
		sent <- err
	}()
	next := 1000.0
	for next < 1000+n {
		msg, ok := c.read()
		if !ok {
			t.Fatalf("the server stopped after %v", next)
		}
		if msg["method"] != nil {
			continue // diagnostics
		}
		if msg["id"] != next {
			t.Fatalf("response id %v, want %v (in order)", msg["id"], next)
		}
		next++
		if int(next)%500 == 0 {
			c.transcript.Reset()
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TestDebounce makes several changes within the debounce time (an hour: no timer fires in
// the test): no diagnostics are published while the changes come, and when the input ends
// the server publishes once, for the last version.
func TestDebounce(t *testing.T) {
	c := startServer(t, Options{Debounce: 3600e9})
	c.initialize()
	c.open("a.moe", smallModel)
	for v := 2; v <= 5; v++ {
		c.notify("textDocument/didChange", map[string]any{
			"textDocument":   map[string]any{"uri": uriOf("a.moe"), "version": v},
			"contentChanges": []any{map[string]any{"text": strings.Replace(smallModel, "heads", "haeds"[:v], 1)}},
		}, "")
	}
	c.request("textDocument/hover", map[string]any{"textDocument": map[string]any{"uri": uriOf("a.moe")}, "position": map[string]int{"line": 2, "character": 3}}, "")
	if strings.Contains(c.transcript.String(), "publishDiagnostics") {
		t.Errorf("diagnostics were published before the debounce time:\n%s", c.transcript.String())
	}
	c.in.Close()
	for {
		if _, ok := c.read(); !ok {
			break
		}
	}
	tr := c.transcript.String()
	if n := strings.Count(tr, "publishDiagnostics"); n != 1 || !strings.Contains(tr, `"version": 5`) || !strings.Contains(tr, "E0201") {
		t.Errorf("want one publication, for version 5 with E0201; got:\n%s", tr)
	}
	if err := <-c.done; err != nil {
		t.Errorf("Serve after the input ended = %v, want nil", err)
	}
}
