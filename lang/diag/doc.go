// Package diag holds moec's diagnostics: positioned, coded messages about a user's input,
// and their rendering as `file:line:col: error[CODE]: summary` with the source line, a
// caret under the exact range and each related place (a Label) marked beside it. A
// *Diagnostic is also the error every user-facing refusal of moec is or wraps. The one
// registry of codes (codes_*.go, constants named Code<Name>) and each code's example
// (examples/) live here too.
//
// In: positions from package ast and messages from any phase.
// Out: Diagnostic values (and errors), their text rendering, the code registry.
package diag
