package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Exit statuses, one rule for every command (README "Exit status", `moec --help`):
//
//	0    success
//	1    the command is well formed but what it was pointed at is wrong or does not fit:
//	     errors in a .moe file, a checkpoint, run folder or data file that is missing,
//	     corrupt, held by another run or does not match, a flag that does not fit the file
//	     (a stage it lacks, a micro-batch that does not divide its batch); and any other
//	     failure to do the work
//	2    usage: the command line alone is wrong, as moec can tell before reading any file:
//	     an unknown command or flag, a missing or extra argument, a flag value out of its
//	     range or that cannot be parsed, flags that cannot go together
//	130  interrupted (what shells report for a command stopped by SIGINT)
const (
	exitOK          = 0
	exitInput       = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// exitRule is the rule as `moec --help` prints it.
const exitRule = "Exit status: 0 success; 1 the input is wrong (a .moe file, checkpoint, run folder or\n" +
	"data file that is missing, corrupt, in use or does not fit) or the work failed; 2 usage\n" +
	"(an unknown command or flag, a missing argument, a flag value out of range, flags that\n" +
	"cannot go together); 130 interrupted."

// errDiagnostics says the diagnostics were already printed; main only sets the status.
var errDiagnostics = errors.New("input has errors")

// errInterrupted says a command stopped cleanly on an interrupt and has already said where
// it stopped and how to continue; main only sets the status.
var errInterrupted = errors.New("interrupted")

// exitStatus is the status for the error a command returned, printed on stderr unless it
// was printed already. ran is the command cobra ran or failed to find; args the command
// line, for a usage error of `moec check --json`, which is a JSON line on stdout.
func exitStatus(err error, ran *cobra.Command, args []string, stdout, stderr io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errDiagnostics):
		return exitInput
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	}
	if d, ok := usageDiagnostic(err, ran); ok {
		if wantsJSONDiagnostics(ran, args) {
			if werr := writeUsageJSON(stdout, d, ran); werr == nil {
				return exitUsage
			}
		}
		writeUsage(stderr, d, ran)
		return exitUsage
	}
	fmt.Fprintf(stderr, "moec: %v\n", err)
	return exitInput
}
