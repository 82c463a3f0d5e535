// Package diag holds moec's diagnostics: positioned, coded messages about a user's input,
// and their rendering as `file:line:col: error[CODE]: summary` with the source line and a
// caret under the exact range.
//
// In: positions from package ast and messages from any phase.
// Out: Diagnostic values and their text rendering.
package diag
