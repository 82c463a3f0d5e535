package lsp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// MaxDocument is the largest document the server checks. Real .moe files are a few
// kilobytes; checking takes about a second per megabyte, so a larger buffer (a log opened
// by mistake, a generated file) is held but not checked, and the client is told once.
const MaxDocument = 1 << 20

// queueLength is how many framed messages may wait for the loop. The reader blocks when the
// queue is full, so a request storm is held back by the pipe, not by the server's memory.
const queueLength = 16

// Options configures a server.
type Options struct {
	// Debounce is how long after the last change a document is checked and its
	// diagnostics published. Zero checks after every change (tests).
	Debounce time.Duration
	// Version is reported in initialize's serverInfo.
	Version string
}

// ErrExitWithoutShutdown is Serve's error when the client sent exit without shutdown; the
// protocol asks the server to exit with status 1 then.
var ErrExitWithoutShutdown = errors.New("lsp: exit without shutdown")

// server is one session's state; only the loop goroutine touches it.
type server struct {
	opt         Options
	out         *writer
	docs        map[string]*document // by URI
	utf8        bool                 // positions count bytes (negotiated in initialize)
	initialized bool
	shutdown    bool
	pending     map[string]bool     // URIs whose diagnostics are due
	published   map[string][]string // root URI -> file URIs it last published diagnostics for
	warnedSize  map[string]bool
}

// Serve runs a session reading from in and writing to out until the client sends exit,
// in ends or ctx is done. It returns nil after shutdown and exit, ErrExitWithoutShutdown
// after an exit without shutdown, and the read error when in fails.
func Serve(ctx context.Context, in io.Reader, out io.Writer, opt Options) error {
	s := &server{
		opt: opt, out: &writer{out: out}, docs: map[string]*document{},
		pending: map[string]bool{}, published: map[string][]string{}, warnedSize: map[string]bool{},
	}
	frames := make(chan frame, queueLength)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		r := bufio.NewReaderSize(in, 64<<10)
		for {
			f, err := readFrame(r)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- f:
			case <-stop:
				return
			}
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			// Messages framed before the stream ended are still answered, each with its
			// diagnostics (no later change can come to debounce them).
			for len(frames) > 0 {
				if done, exitErr := s.handleFrame(<-frames); done {
					return exitErr
				}
				s.flushDiagnostics()
			}
			s.flushDiagnostics()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("lsp: reading from the client: %w", err)
		case f := <-frames:
			done, exitErr := s.handleFrame(f)
			if done {
				return exitErr
			}
			if len(s.pending) > 0 {
				if s.opt.Debounce <= 0 {
					s.flushDiagnostics()
				} else {
					timer.Reset(s.opt.Debounce)
				}
			}
		case <-timer.C:
			s.flushDiagnostics()
		}
		if s.out.err != nil {
			return s.out.err
		}
	}
}

// handleFrame handles one framed message; done is true after exit.
func (s *server) handleFrame(f frame) (done bool, err error) {
	if f.err != nil {
		var big *tooLarge
		if errors.As(f.err, &big) {
			s.logMessage(1, f.err.Error())
			return false, nil
		}
		s.reply(json.RawMessage("null"), nil, &rpcError{Code: codeParseError, Message: f.err.Error()})
		return false, nil
	}
	var msg incoming
	if err := json.Unmarshal(f.body, &msg); err != nil {
		s.reply(json.RawMessage("null"), nil, &rpcError{Code: codeParseError, Message: "parse error: " + err.Error()})
		return false, nil
	}
	if msg.Method == "" {
		if len(msg.ID) == 0 || (msg.Result == nil && msg.Error == nil) {
			s.reply(idOrNull(msg.ID), nil, &rpcError{Code: codeInvalidRequest, Message: "a message needs a method, or an id with a result or error"})
		}
		return false, nil // a response to a request of ours: none is sent, so none is awaited
	}
	if msg.Method == "exit" {
		if s.shutdown {
			return true, nil
		}
		return true, ErrExitWithoutShutdown
	}
	result, rerr := s.dispatch(&msg)
	if msg.isRequest() {
		s.reply(msg.ID, result, rerr)
	} else if rerr != nil && rerr.Code != codeMethodNotFound {
		s.logMessage(1, fmt.Sprintf("%s: %s", msg.Method, rerr.Message))
	}
	return false, nil
}

func idOrNull(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	return id
}

func (s *server) reply(id json.RawMessage, result any, rerr *rpcError) {
	if rerr != nil {
		_ = s.out.write(errorResponse{JSONRPC: "2.0", ID: id, Error: rerr})
		return
	}
	_ = s.out.write(response{JSONRPC: "2.0", ID: id, Result: result})
}

func (s *server) notify(method string, params any) {
	_ = s.out.write(notification{JSONRPC: "2.0", Method: method, Params: params})
}

// logMessage sends window/logMessage (type 1 error, 2 warning, 3 info).
func (s *server) logMessage(typ int, text string) {
	s.notify("window/logMessage", showMessageParams{Type: typ, Message: text})
}

// dispatch runs one request or notification. A panic in a handler (a bug in moec, not in
// the user's file) answers the request with an internal error instead of ending the
// session.
func (s *server) dispatch(msg *incoming) (result any, rerr *rpcError) {
	defer func() {
		if r := recover(); r != nil {
			result, rerr = nil, &rpcError{Code: codeInternalError, Message: fmt.Sprintf("internal error in %s: %v", msg.Method, r)}
		}
	}()
	if msg.Method == "initialize" {
		return s.initialize(msg.Params)
	}
	if !s.initialized {
		if msg.isRequest() {
			return nil, &rpcError{Code: codeServerNotInitialized, Message: "the server is not initialized"}
		}
		return nil, nil // notifications before initialize are dropped, as the protocol says
	}
	if s.shutdown && msg.isRequest() {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "the server is shut down"}
	}
	switch msg.Method {
	case "initialized", "$/cancelRequest", "$/setTrace", "workspace/didChangeConfiguration", "textDocument/didSave":
		return nil, nil
	case "shutdown":
		s.shutdown = true
		return nil, nil
	case "textDocument/didOpen":
		var p didOpenParams
		if err := decode(msg.Params, &p); err != nil {
			return nil, err
		}
		s.docs[p.TextDocument.URI] = newDocument(p.TextDocument.URI, p.TextDocument.Version, p.TextDocument.Text)
		s.schedule(p.TextDocument.URI)
		return nil, nil
	case "textDocument/didChange":
		var p didChangeParams
		if err := decode(msg.Params, &p); err != nil {
			return nil, err
		}
		return nil, s.didChange(p)
	case "textDocument/didClose":
		var p didCloseParams
		if err := decode(msg.Params, &p); err != nil {
			return nil, err
		}
		delete(s.docs, p.TextDocument.URI)
		delete(s.pending, p.TextDocument.URI)
		for _, uri := range s.published[p.TextDocument.URI] {
			s.notify("textDocument/publishDiagnostics", publishDiagnosticsParams{URI: uri, Diagnostics: []lspDiagnostic{}})
		}
		delete(s.published, p.TextDocument.URI)
		return nil, nil
	case "textDocument/hover":
		var p textDocumentPositionParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.hover(p.Position), nil })
	case "textDocument/definition":
		var p textDocumentPositionParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.definition(p.Position), nil })
	case "textDocument/references":
		var p referenceParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) {
			return v.references(p.Position, p.Context.IncludeDeclaration), nil
		})
	case "textDocument/completion":
		var p textDocumentPositionParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.completion(p.Position), nil })
	case "textDocument/documentSymbol":
		var p documentFormattingParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.symbols(), nil })
	case "textDocument/formatting":
		var p documentFormattingParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.format() })
	case "textDocument/codeAction":
		var p codeActionParams
		return s.withDocument(msg.Params, &p, &p.TextDocument, func(v *view) (any, *rpcError) { return v.codeActions(p.Range), nil })
	}
	if msg.isRequest() {
		return nil, &rpcError{Code: codeMethodNotFound, Message: "method not supported: " + msg.Method}
	}
	return nil, nil // unknown notifications are ignored
}

func (s *server) initialize(params json.RawMessage) (any, *rpcError) {
	if s.initialized {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "initialize was already sent"}
	}
	var p initializeParams
	if err := decode(params, &p); err != nil {
		return nil, err
	}
	encoding := "utf-16"
	for _, e := range p.Capabilities.General.PositionEncodings {
		if e == "utf-8" {
			encoding, s.utf8 = "utf-8", true
		}
	}
	s.initialized = true
	return map[string]any{
		"capabilities": map[string]any{
			"positionEncoding":           encoding,
			"textDocumentSync":           map[string]any{"openClose": true, "change": 2},
			"hoverProvider":              true,
			"definitionProvider":         true,
			"referencesProvider":         true,
			"documentSymbolProvider":     true,
			"documentFormattingProvider": true,
			"completionProvider":         map[string]any{"triggerCharacters": []string{"=", " "}},
			"codeActionProvider":         map[string]any{"codeActionKinds": []string{"quickfix"}},
		},
		"serverInfo": map[string]any{"name": "moec", "version": s.opt.Version},
	}, nil
}

// didChange applies p's changes in order: a change with a range replaces that range, one
// without replaces the whole text.
func (s *server) didChange(p didChangeParams) *rpcError {
	doc := s.docs[p.TextDocument.URI]
	if doc == nil {
		return &rpcError{Code: codeInvalidParams, Message: "didChange for a document that is not open: " + p.TextDocument.URI}
	}
	for _, c := range p.ContentChanges {
		if c.Range == nil {
			doc.setText([]byte(c.Text))
			continue
		}
		ps := positions{text: doc.text, lines: doc.lines, utf8: s.utf8}
		start, end := ps.offset(c.Range.Start), ps.offset(c.Range.End)
		if end < start {
			start, end = end, start
		}
		text := make([]byte, 0, len(doc.text)-(end-start)+len(c.Text))
		text = append(append(append(text, doc.text[:start]...), c.Text...), doc.text[end:]...)
		doc.setText(text)
	}
	doc.version = p.TextDocument.Version
	s.schedule(doc.uri)
	return nil
}

func (s *server) schedule(uri string) { s.pending[uri] = true }

// flushDiagnostics checks every document whose diagnostics are due and publishes them.
func (s *server) flushDiagnostics() {
	for _, uri := range sortedFiles(s.pending) {
		delete(s.pending, uri)
		if doc := s.docs[uri]; doc != nil {
			s.publish(doc)
		}
	}
}

// publish sends doc's diagnostics, and those of the files it imports, clearing files that
// had diagnostics last time and have none now.
func (s *server) publish(doc *document) {
	snap := s.snapshot(doc)
	byFile := map[string][]lspDiagnostic{}
	if snap != nil {
		byFile = snap.diagnosticsByFile(s.utf8)
	}
	root := filepath.Clean(doc.path)
	if _, ok := byFile[root]; !ok {
		byFile[root] = []lspDiagnostic{}
	}
	var uris []string
	for _, file := range sortedFiles(byFile) {
		if file != root && s.isOpen(file) {
			continue // an open import publishes its own diagnostics, with its version
		}
		uri := pathToURI(file)
		var version *int
		if file == root {
			uri = doc.uri
			v := doc.version
			version = &v
		}
		uris = append(uris, uri)
		s.notify("textDocument/publishDiagnostics", publishDiagnosticsParams{URI: uri, Version: version, Diagnostics: byFile[file]})
	}
	for _, old := range s.published[doc.uri] {
		if !contains(uris, old) {
			s.notify("textDocument/publishDiagnostics", publishDiagnosticsParams{URI: old, Diagnostics: []lspDiagnostic{}})
		}
	}
	s.published[doc.uri] = uris
}

// isOpen reports whether a document with this path is open.
func (s *server) isOpen(path string) bool {
	for _, d := range s.docs {
		if filepath.Clean(d.path) == path {
			return true
		}
	}
	return false
}

func contains(list []string, x string) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

// snapshot returns doc's analysis, computing it when the text changed since; nil when the
// document is too large to check or checking it failed (said once in the log).
func (s *server) snapshot(doc *document) *snapshot {
	if doc.snap != nil {
		return doc.snap
	}
	if len(doc.text) > MaxDocument {
		if !s.warnedSize[doc.uri] {
			s.warnedSize[doc.uri] = true
			s.notify("window/showMessage", showMessageParams{Type: 2, Message: fmt.Sprintf(
				"moec: %s is %d bytes, over the %d bytes the language server checks while typing; run moec check on it", doc.path, len(doc.text), MaxDocument)})
		}
		return nil
	}
	snap, err := analyze(doc, func(path string) ([]byte, bool) {
		for _, d := range s.docs {
			if filepath.Clean(d.path) == filepath.Clean(path) && len(d.text) <= MaxDocument {
				return d.text, true
			}
		}
		return nil, false
	})
	if err != nil {
		s.logMessage(1, err.Error())
		return nil
	}
	doc.snap = snap
	return snap
}

// withDocument decodes params into p, finds the document named by id and runs f on a view
// of it. A document that is not open is an invalid-params error (the protocol's answer to
// a request about a document the client never opened); one too large to check answers null.
func (s *server) withDocument(params json.RawMessage, p any, id *textDocumentIdentifier, f func(*view) (any, *rpcError)) (any, *rpcError) {
	if err := decode(params, p); err != nil {
		return nil, err
	}
	doc := s.docs[id.URI]
	if doc == nil {
		return nil, &rpcError{Code: codeInvalidParams, Message: "document not open: " + id.URI}
	}
	snap := s.snapshot(doc)
	if snap == nil {
		return nil, nil
	}
	return f(&view{doc: doc, snap: snap, pos: positions{text: doc.text, lines: doc.lines, utf8: s.utf8}})
}
