// Package ast defines the syntax tree of .moe files.
//
// In: nothing (the parser in package parse builds these values).
// Out: a File whose every node carries its source Span (Pos and EndPos), so that any later
// phase can point a diagnostic at the exact range a user wrote.
//
// The tree is deliberately generic: a declaration is a Block of `key = value` entries and
// nested Blocks. Which keys a block may hold, their types and units are the checker's
// business (package compiler/check), so the grammar stays small and every unknown key can
// be reported with a "did you mean".
package ast
