package lsp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// client speaks JSON-RPC to a server over pipes, as an editor does, and keeps a transcript
// of every message sent and received.
type client struct {
	t          testing.TB
	in         *io.PipeWriter // the server's input
	out        *bufio.Reader  // the server's output
	id         int
	versions   map[string]int
	transcript bytes.Buffer
	done       chan error
}

func startServer(t testing.TB, opt Options) *client {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &client{t: t, in: inW, out: bufio.NewReader(outR), versions: map[string]int{}, done: make(chan error, 1)}
	go func() {
		err := Serve(context.Background(), inR, outW, opt)
		outW.Close()
		c.done <- err
	}()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	return c
}

func (c *client) sendBody(body []byte) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.in, "Content-Length: %d\r\n\r\n%s", len(body), body); err != nil {
		c.t.Fatalf("writing to the server: %v", err)
	}
}

func (c *client) notify(method string, params any, note string) {
	c.t.Helper()
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(&c.transcript, "--> %s %s\n", method, note)
	c.sendBody(body)
}

// request sends a request and reads until its response, recording what arrives; it returns
// the response.
func (c *client) request(method string, params any, note string) map[string]any {
	c.t.Helper()
	c.id++
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params})
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(&c.transcript, "--> %s #%d %s\n", method, c.id, note)
	c.sendBody(body)
	return c.readUntil(float64(c.id))
}

// readUntil reads messages until the response with id, recording each.
func (c *client) readUntil(id any) map[string]any {
	c.t.Helper()
	for {
		msg, ok := c.read()
		if !ok {
			c.t.Fatalf("the server closed its output before answering #%v", id)
		}
		if msg["id"] == id && msg["method"] == nil {
			return msg
		}
	}
}

// read reads and records one message; ok is false at the end of the stream.
func (c *client) read() (map[string]any, bool) {
	c.t.Helper()
	f, err := readFrame(c.out)
	if errors.Is(err, io.EOF) {
		return nil, false
	}
	if err != nil || f.err != nil {
		c.t.Fatalf("reading from the server: %v %v", err, f.err)
	}
	var msg map[string]any
	if err := json.Unmarshal(f.body, &msg); err != nil {
		c.t.Fatalf("the server sent invalid JSON %q: %v", f.body, err)
	}
	pretty, _ := json.MarshalIndent(msg, "    ", "  ")
	fmt.Fprintf(&c.transcript, "<-- %s\n", pretty)
	return msg, true
}

func uriOf(name string) string { return "file:///ws/" + name }

// parsePos reads "line:character" (0-based, as the protocol counts).
func parsePos(t *testing.T, s string) map[string]int {
	t.Helper()
	l, ch, ok := strings.Cut(s, ":")
	line, err1 := strconv.Atoi(l)
	char, err2 := strconv.Atoi(ch)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("bad position %q", s)
	}
	return map[string]int{"line": line, "character": char}
}

// runScript drives a session from a script, one command a line:
//
//	initialize [utf-8]           open NAME                change NAME SECTION
//	edit NAME L:C L:C "text"      hover|definition|references|completion NAME L:C
//	symbols NAME                 format NAME              codeaction NAME L:C L:C
//	raw "bytes"                  (written as they are: framing and all)
//	frame "body"                 (a Content-Length header, then the body as it is)
//	request METHOD JSON          notify METHOD JSON       shutdown    exit
//
// and returns the transcript.
func runScript(t *testing.T, script string, files map[string][]byte) string {
	c := startServer(t, Options{Version: "test"})
	doc := func(name string) map[string]any { return map[string]any{"uri": uriOf(name)} }
	for _, line := range strings.Split(script, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(line, "#") {
			continue
		}
		switch f[0] {
		case "initialize":
			caps := map[string]any{}
			if len(f) > 1 {
				caps["general"] = map[string]any{"positionEncodings": f[1:]}
			}
			c.request("initialize", map[string]any{"capabilities": caps}, "")
			c.notify("initialized", map[string]any{}, "")
		case "open":
			c.versions[f[1]] = 1
			c.notify("textDocument/didOpen", map[string]any{"textDocument": map[string]any{
				"uri": uriOf(f[1]), "languageId": "moe", "version": 1, "text": string(files[f[1]]),
			}}, f[1])
		case "change":
			c.versions[f[1]]++
			c.notify("textDocument/didChange", map[string]any{
				"textDocument":   map[string]any{"uri": uriOf(f[1]), "version": c.versions[f[1]]},
				"contentChanges": []any{map[string]any{"text": string(files[f[2]])}},
			}, f[1]+" := "+f[2])
		case "edit":
			text, err := strconv.Unquote(strings.Join(f[4:], " "))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			c.versions[f[1]]++
			c.notify("textDocument/didChange", map[string]any{
				"textDocument": map[string]any{"uri": uriOf(f[1]), "version": c.versions[f[1]]},
				"contentChanges": []any{map[string]any{
					"range": map[string]any{"start": parsePos(t, f[2]), "end": parsePos(t, f[3])}, "text": text,
				}},
			}, strings.Join(f[1:], " "))
		case "hover", "definition", "references", "completion":
			params := map[string]any{"textDocument": doc(f[1]), "position": parsePos(t, f[2])}
			if f[0] == "references" {
				params["context"] = map[string]any{"includeDeclaration": true}
			}
			c.request("textDocument/"+f[0], params, strings.Join(f[1:], " "))
		case "symbols":
			c.request("textDocument/documentSymbol", map[string]any{"textDocument": doc(f[1])}, f[1])
		case "format":
			c.request("textDocument/formatting", map[string]any{"textDocument": doc(f[1]), "options": map[string]any{"tabSize": 2, "insertSpaces": true}}, f[1])
		case "codeaction":
			c.request("textDocument/codeAction", map[string]any{
				"textDocument": doc(f[1]), "range": map[string]any{"start": parsePos(t, f[2]), "end": parsePos(t, f[3])},
				"context": map[string]any{"diagnostics": []any{}},
			}, strings.Join(f[1:], " "))
		case "raw":
			raw, err := strconv.Unquote(strings.Join(f[1:], " "))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			fmt.Fprintf(&c.transcript, "--> raw %q\n", raw)
			if _, err := io.WriteString(c.in, raw); err != nil {
				t.Fatal(err)
			}
		case "frame":
			body, err := strconv.Unquote(strings.Join(f[1:], " "))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			fmt.Fprintf(&c.transcript, "--> frame %q\n", body)
			c.sendBody([]byte(body))
		case "request", "notify":
			var params any
			if err := json.Unmarshal([]byte(strings.Join(f[2:], " ")), &params); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if f[0] == "request" {
				c.request(f[1], params, strings.Join(f[2:], " "))
			} else {
				c.notify(f[1], params, "")
			}
		case "shutdown":
			c.request("shutdown", nil, "")
		case "exit":
			c.notify("exit", nil, "")
			for {
				if _, ok := c.read(); !ok {
					break
				}
			}
			fmt.Fprintf(&c.transcript, "server returned: %v\n", <-c.done)
		default:
			t.Fatalf("unknown script command %q", line)
		}
	}
	return c.transcript.String()
}

// TestTranscripts runs testdata/*.txtar: a script of editor actions against .moe sections,
// and the transcript of every message exchanged (go test -update rewrites it).
func TestTranscripts(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		return []golden.Section{{Name: "transcript", Data: []byte(runScript(t, string(in["script"]), in))}}
	})
}
