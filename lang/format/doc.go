// Package format prints a .moe syntax tree in moec's canonical layout (`moec fmt`).
//
// In: an *ast.File from lang/parse, without syntax errors, and the source it came from
// (used only to see where the writer left blank lines; nil is allowed).
// Out: the formatted bytes. Layout: two-space indentation, one entry per line,
// `key = value` with single spaces around `=` and binary operators, one blank line
// between top-level declarations, at most one blank line kept between entries, numbers
// exactly as written, strings re-quoted canonically, short lists and calls on one line
// and long ones (or ones holding a comment) one element a line. Every comment is kept:
// a comment on the line of an entry stays at the end of that entry's line, one on its
// own line stays above the entry that follows it.
//
// Properties, tested and fuzzed: formatting is idempotent, the result parses to the same
// tree (spans aside), and no comment is lost.
package format
