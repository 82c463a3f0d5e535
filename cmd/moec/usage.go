package main

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moec-dev/moec/lang/diag"
)

// usageFailure marks an error as the command line's own (exit 2). The error is, or wraps,
// the *diag.Diagnostic that says what is wrong under a command-line code (E00xx) or a run
// option's (E0611, E0509).
type usageFailure struct{ err error }

func (u usageFailure) Error() string { return u.err.Error() }
func (u usageFailure) Unwrap() error { return u.err }

// usage marks err as a usage error: the command line alone is wrong.
func usage(err error) error {
	if err == nil {
		return nil
	}
	return usageFailure{err}
}

// usageCode returns a usage diagnostic with a formatted summary under code: the
// command-line refusals a command's RunE makes itself.
func usageCode(code diag.Code, format string, args ...any) error {
	return usage(diag.Runtimef(code, format, args...))
}

// withUsageOnMisuse gives root and every command under it the command-line codes: a wrong
// number of arguments (E0003), a flag cobra cannot parse (E0002, E0004), and a command
// that only groups others given a name it lacks (E0001, which cobra leaves to the root,
// printing the help of `moec import nosuch` with status 0).
func withUsageOnMisuse(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return usage(unknownCommand(cmd, args[0]))
		}
	}
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usage(argumentsDiagnostic(cmd, a, err))
			}
			return nil
		}
	}
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usage(flagDiagnostic(cmd, err)) })
	for _, sub := range c.Commands() {
		withUsageOnMisuse(sub)
	}
}

// commandPrefix is how a diagnostic's summary names cmd: by its path under the root
// ("check: ", "export hf: "), and not at all for the root (main prefixes "moec: ").
func commandPrefix(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return ""
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ") + ": "
}

// unknownCommand is E0001 for word under cmd, with cobra's suggestion of the command
// nearest to it.
func unknownCommand(cmd *cobra.Command, word string) *diag.Diagnostic {
	d := diag.Runtimef(diag.CodeUnknownCommand, "unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which only its own message sets
	}
	if near := cmd.SuggestionsFor(word); len(near) > 0 {
		d.Suggestion = fmt.Sprintf("did you mean %q?", near[0])
	}
	return d
}

// argumentsDiagnostic is E0003 for the arguments a that cmd's argument rule refused.
func argumentsDiagnostic(cmd *cobra.Command, a []string, err error) *diag.Diagnostic {
	if strings.HasPrefix(err.Error(), "unknown command") && len(a) > 0 {
		// cobra.NoArgs names the first argument an unknown command.
		return diag.Runtimef(diag.CodeWrongArguments, "%stakes no arguments, got %s", commandPrefix(cmd), quoteAll(a))
	}
	return diag.Runtimef(diag.CodeWrongArguments, "%s%v", commandPrefix(cmd), err)
}

func quoteAll(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = strconv.Quote(w)
	}
	return strings.Join(q, " ")
}

// flagDiagnostic is the diagnostic for the flags of cmd that pflag could not parse: an
// unknown flag (E0002, with the nearest flag suggested) or a value that is missing or is
// not of the flag's type (E0004).
func flagDiagnostic(cmd *cobra.Command, err error) *diag.Diagnostic {
	prefix := commandPrefix(cmd)
	var (
		notExist *pflag.NotExistError
		noValue  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		syntax   *pflag.InvalidSyntaxError
	)
	switch {
	case errors.As(err, &notExist):
		if short := notExist.GetSpecifiedShortnames(); short != "" {
			return diag.Runtimef(diag.CodeUnknownFlag, "%sunknown shorthand flag -%s in -%s", prefix, notExist.GetSpecifiedName()[:1], short)
		}
		name := notExist.GetSpecifiedName()
		d := diag.Runtimef(diag.CodeUnknownFlag, "%sunknown flag --%s", prefix, name)
		if near, ok := diag.Closest(name, flagNames(cmd)); ok {
			d.Suggestion = fmt.Sprintf("did you mean --%s?", near)
		}
		return d
	case errors.As(err, &noValue):
		return diag.Runtimef(diag.CodeBadFlagValue, "%s--%s needs a value", prefix, noValue.GetFlag().Name)
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		d := diag.Runtimef(diag.CodeBadFlagValue, "%s--%s %q: want %s", prefix, f.Name, invalid.GetValue(), valueKind(f.Value.Type()))
		var num *strconv.NumError
		if cause := errors.Unwrap(invalid); cause != nil && !errors.As(cause, &num) && !isDurationSyntax(cause) {
			d.Err = cause // a flag type of moec's own says what it wants
		} else if errors.Is(cause, strconv.ErrRange) {
			d.Summary += " in the type's range"
		}
		return d
	case errors.As(err, &syntax):
		return diag.Runtimef(diag.CodeUnknownFlag, "%s%s is not a flag: a flag is -x or --name", prefix, syntax.GetSpecifiedFlag())
	}
	return diag.RuntimeWrap(diag.CodeBadFlagValue, err, "%sthe flags cannot be parsed", prefix)
}

// flagNames lists the flags cmd takes, its own and those it inherits, unhidden.
func flagNames(cmd *cobra.Command) []string {
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Deprecated == "" {
			names = append(names, f.Name)
		}
	})
	return names
}

// valueKind says what a flag of pflag's type name takes.
func valueKind(typ string) string {
	switch typ {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "duration":
		return "a duration (90s, 5m, 1h30m)"
	}
	return "a value of type " + typ
}

// isDurationSyntax reports whether err is time.ParseDuration's refusal, which repeats the
// value the summary already quotes.
func isDurationSyntax(err error) bool {
	return strings.HasPrefix(err.Error(), "time: ")
}

// cobraFlagRule is the diagnostic for cobra's flag-group rules (MarkFlagsMutuallyExclusive
// and kin), which it checks after parsing and returns as plain errors: E0005 for flags
// that cannot go together, E0006 for a flag the command needs.
func cobraFlagRule(cmd *cobra.Command, err error) (*diag.Diagnostic, bool) {
	msg := err.Error()
	for _, rule := range []struct {
		prefix string
		code   diag.Code
	}{
		{"if any flags in the group", diag.CodeConflictingFlags},
		{"at least one of the flags in the group", diag.CodeMissingFlag},
		{"required flag(s)", diag.CodeMissingFlag},
	} {
		if !strings.HasPrefix(msg, rule.prefix) {
			continue
		}
		if strings.Contains(msg, "they must all be set") {
			return diag.Runtimef(diag.CodeMissingFlag, "%s%s", commandPrefix(cmd), msg), true
		}
		if m := flagGroup.FindStringSubmatch(msg); rule.code == diag.CodeConflictingFlags && m != nil {
			return diag.Runtimef(rule.code, "%s%s cannot go together", commandPrefix(cmd), dashed(strings.Fields(m[1]))), true
		}
		return diag.Runtimef(rule.code, "%s%s", commandPrefix(cmd), msg), true
	}
	return nil, false
}

// flagGroup matches the flags cobra names in a flag-group error: "[explain json]".
var flagGroup = regexp.MustCompile(`\[([^\]]*)\]`)

// dashed writes flag names as they are typed: "--explain and --json".
func dashed(names []string) string {
	for i, n := range names {
		names[i] = "--" + n
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// usageDiagnostic returns the diagnostic of a usage error err that ran (the command cobra
// ran or failed to find) returned, and whether err is one.
func usageDiagnostic(err error, ran *cobra.Command) (*diag.Diagnostic, bool) {
	var u usageFailure
	var d *diag.Diagnostic
	if errors.As(err, &u) {
		if errors.As(u.err, &d) {
			return d, true
		}
		// Every usage error carries a code (TestExitStatus holds them to it); this is a bug's
		// fallback, still exit 2.
		return diag.RuntimeWrap(diag.CodeWrongArguments, u.err, "%sthe command line is wrong", commandPrefix(ran)), true
	}
	return cobraFlagRule(ran, err)
}

// writeUsage prints a usage error as every other refusal is printed, `moec: error[CODE]:
// summary`, its suggestion as `help: ...`, then how ran is called and where its help is.
func writeUsage(w io.Writer, d *diag.Diagnostic, ran *cobra.Command) {
	fmt.Fprintf(w, "moec: %s\n", d.String())
	for _, n := range d.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if d.Suggestion != "" {
		fmt.Fprintf(w, "help: %s\n", d.Suggestion)
	}
	fmt.Fprintf(w, "%s\n%s\n", usageLine(ran), helpLine(ran))
}

func usageLine(cmd *cobra.Command) string {
	if cmd.HasAvailableSubCommands() {
		return "usage: " + cmd.CommandPath() + " COMMAND [flags]"
	}
	return "usage: " + cmd.UseLine()
}

func helpLine(cmd *cobra.Command) string {
	return fmt.Sprintf("run '%s --help' for more", cmd.CommandPath())
}

// jsonDiagnosticsFlag is the annotation naming the boolean flag that makes a command print
// its diagnostics as JSON lines (check's --json): with it on the command line, a usage
// error is one such line on standard output too, for the editor that reads them.
const jsonDiagnosticsFlag = "moec/json-diagnostics-flag"

// wantsJSONDiagnostics reports whether args turn on ran's JSON diagnostics. It reads the
// arguments themselves, since the flag that failed to parse may come before --json.
func wantsJSONDiagnostics(ran *cobra.Command, args []string) bool {
	name, ok := ran.Annotations[jsonDiagnosticsFlag]
	if !ok {
		return false
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--" + name, "--" + name + "=true", "--" + name + "=1":
			return true
		}
	}
	return false
}

// writeUsageJSON writes a usage error as a line of `moec check --json`: no place, and the
// usage line and where the help is as its notes.
func writeUsageJSON(w io.Writer, d *diag.Diagnostic, ran *cobra.Command) error {
	j := *d
	j.Notes = append(append([]string{}, d.Notes...), usageLine(ran), helpLine(ran))
	return writeDiagnosticsJSON(w, diag.List{j})
}
