// Package lsp is moec's language server: `moec lsp` speaks the Language Server Protocol
// over standard input and output, so that an editor shows while one types what `moec
// check`, `moec check --explain` and `moec plan` say after a save.
//
// In: JSON-RPC 2.0 messages framed with Content-Length headers (jsonrpc.go). Out: responses
// in the order the requests came, and textDocument/publishDiagnostics notifications.
//
// Every answer comes from the compiler's own phases, never a copy of them: diagnostics are
// compiler/check.LoadFiles' list (the codes, ranges, notes and suggestions of `moec check
// --json`), hover reads program.Program.Explain (as `moec check --explain` prints it),
// compiler/analysis for parameter counts and compiler/plan for a stage's plan, completion
// reads the checker's schema (check.Schema) and formatting is lang/format.
//
// The server is one loop: a reader goroutine frames messages into a small bounded queue
// (a client that sends faster than the server answers is slowed by the pipe, not buffered
// without limit), and the loop handles them one at a time, so responses keep the
// requests' order. Diagnostics after a change are debounced: a change schedules a check
// Options.Debounce later, and further changes before then move it.
package lsp
