// Package parse reads .moe source into the syntax tree of package ast.
//
// In: a file name and its bytes (File), or one expression (Expr).
// Out: an *ast.File whose every node carries its exact source span (End is just past the
// node), every comment in File.Comments, and a diag.List with one diagnostic (codes
// E01xx) per syntax error.
//
// Scanning is hand-written (scan) so that it can keep comments, decode strings, split
// number suffixes and decide where a newline separates entries; the grammar itself is a
// participle grammar (grammar.go) whose types never leave the package. A file that parses
// in one go costs a single participle pass. Otherwise the parser recovers: it cuts the
// tokens into declarations, then blocks into header and entries, and parses each piece
// on its own, so that every broken entry is reported while the good ones are kept in the
// tree. Brackets deeper than MaxDepth are refused with a diagnostic, and no input makes
// File panic.
//
// Two layout rules help recovery, and hold for valid files too: a declaration keyword
// (model, cluster, train, serve, compress, experiment, import) at column 1 that is not
// followed by `=` always starts a new declaration, closing whatever brackets were left
// open; and inside `( )` or `[ ]`, a line that starts with `key =` or `}` right after a
// complete value ends the open bracket (no valid file has that shape).
package parse
