package diag

// Command-line usage errors (cmd/moec): E00xx. These are a command line that is wrong on
// its own, as moec can tell before reading any file: an unknown command or flag, a wrong
// number of arguments, a flag value that cannot be parsed, flags that cannot go together,
// a flag the command needs. moec exits with status 2 for each. A flag value that parses
// but is out of its range is a run option's refusal (E0611), reported in the same form.
//
// Append only: a published code keeps its number and meaning. A code is one constant
// and one entry in cliCodes, each on its own line, in code order.

const CodeUnknownCommand Code = "E0001"
const CodeUnknownFlag Code = "E0002"
const CodeWrongArguments Code = "E0003"
const CodeBadFlagValue Code = "E0004"
const CodeConflictingFlags Code = "E0005"
const CodeMissingFlag Code = "E0006"

var cliCodes = []Info{
	{CodeUnknownCommand, "moec has no command of that name"},
	{CodeUnknownFlag, "the command has no flag of that name"},
	{CodeWrongArguments, "the command takes a different number of arguments"},
	{CodeBadFlagValue, "a flag's value is missing or cannot be parsed as the flag's type (a number, a size, a duration)"},
	{CodeConflictingFlags, "flags (or a flag and an argument) that cannot go together"},
	{CodeMissingFlag, "a flag the command needs is missing"},
}
