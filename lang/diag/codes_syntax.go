package diag

// Syntax codes (lang/parse). Append only: a published code keeps its meaning.
const (
	UnexpectedToken     Code = "E0101"
	UnterminatedString  Code = "E0102"
	BadNumber           Code = "E0103"
	UnknownSuffix       Code = "E0104"
	MissingRBrace       Code = "E0105"
	MissingEquals       Code = "E0106"
	IllegalCharacter    Code = "E0107"
	NestingTooDeep      Code = "E0108"
	UnmatchedClose      Code = "E0109"
	MissingClose        Code = "E0110"
	BadEscape           Code = "E0111"
	AssignOutsideBlock  Code = "E0112"
	MissingValue        Code = "E0113"
	ImportNotString     Code = "E0114"
	MissingSeparator    Code = "E0115"
	ExprTooLong         Code = "E0116"
	TooManyRepeats      Code = "E0117"
	InternalParserError Code = "E0199"
)

var syntaxCodes = []Info{
	{UnexpectedToken, "unexpected token"},
	{UnterminatedString, "unterminated string literal"},
	{BadNumber, "malformed number literal"},
	{UnknownSuffix, "unknown number suffix"},
	{MissingRBrace, "block is missing its closing `}`"},
	{MissingEquals, "missing `=` between a key and its value"},
	{IllegalCharacter, "character not allowed in .moe source"},
	{NestingTooDeep, "brackets nested too deeply"},
	{UnmatchedClose, "closing bracket without a matching opening bracket"},
	{MissingClose, "missing closing `)` or `]`"},
	{BadEscape, "invalid escape sequence in string"},
	{AssignOutsideBlock, "`key = value` outside any block"},
	{MissingValue, "missing value after `=`"},
	{ImportNotString, "import path must be a string"},
	{MissingSeparator, "entries must be separated by a newline or `;`"},
	{ExprTooLong, "expression has too many operators"},
	{TooManyRepeats, "too many entries, separators or list elements in a row"},
	{InternalParserError, "internal parser error (a bug in moec)"},
}
