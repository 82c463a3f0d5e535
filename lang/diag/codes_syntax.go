package diag

// Syntax codes (lang/parse): E01xx.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in syntaxCodes, each on its own line, in code order.

const CodeUnexpectedToken Code = "E0101"
const CodeUnterminatedString Code = "E0102"
const CodeBadNumber Code = "E0103"
const CodeUnknownSuffix Code = "E0104"
const CodeMissingRBrace Code = "E0105"
const CodeMissingEquals Code = "E0106"
const CodeIllegalCharacter Code = "E0107"
const CodeNestingTooDeep Code = "E0108"
const CodeUnmatchedClose Code = "E0109"
const CodeMissingClose Code = "E0110"
const CodeBadEscape Code = "E0111"
const CodeAssignOutsideBlock Code = "E0112"
const CodeMissingValue Code = "E0113"
const CodeImportNotString Code = "E0114"
const CodeMissingSeparator Code = "E0115"
const CodeExprTooLong Code = "E0116"
const CodeTooManyRepeats Code = "E0117"
const CodeInternalParserError Code = "E0199"

var syntaxCodes = []Info{
	{CodeUnexpectedToken, "unexpected token"},
	{CodeUnterminatedString, "unterminated string literal"},
	{CodeBadNumber, "malformed number literal"},
	{CodeUnknownSuffix, "unknown number suffix"},
	{CodeMissingRBrace, "block is missing its closing `}`"},
	{CodeMissingEquals, "missing `=` between a key and its value"},
	{CodeIllegalCharacter, "character not allowed in .moe source"},
	{CodeNestingTooDeep, "brackets nested too deeply"},
	{CodeUnmatchedClose, "closing bracket without a matching opening bracket"},
	{CodeMissingClose, "missing closing `)` or `]`"},
	{CodeBadEscape, "invalid escape sequence in string"},
	{CodeAssignOutsideBlock, "`key = value` outside any block"},
	{CodeMissingValue, "missing value after `=`"},
	{CodeImportNotString, "import path must be a string"},
	{CodeMissingSeparator, "entries must be separated by a newline or `;`"},
	{CodeExprTooLong, "expression has too many operators"},
	{CodeTooManyRepeats, "too many entries, separators or list elements in a row"},
	{CodeInternalParserError, "internal parser error (a bug in moec)"},
}
