package main

import (
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/lang/diag"
)

func newExplainCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "explain [CODE...]",
		Short: "Explain diagnostic codes (E0509, W9501, …); without a code, list them all",
		Long: "Explain prints what a diagnostic code means, whether it is an error or a warning,\n" +
			"which part of moec reports it, and an example that produces it: a .moe file, or the\n" +
			"command lines and the files they read. Without arguments it lists every registered code.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				for _, info := range diag.Registry() {
					fmt.Fprintf(stdout, "%s  %s\n", info.Code, info.Summary)
				}
				return nil
			}
			for i, a := range args {
				info, ok := diag.Lookup(a)
				if !ok {
					e := diag.Runtimef(diag.CodeBadRunOption, "explain: %q is not a moec diagnostic code", a)
					var codes []string
					for _, in := range diag.Registry() {
						codes = append(codes, string(in.Code))
					}
					if c, ok := diag.Closest(strings.ToUpper(a), codes); ok {
						e.Suggestion = fmt.Sprintf("did you mean %s?", c)
					} else {
						e.Suggestion = "run moec explain without arguments for the list"
					}
					return e
				}
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "%s: %s, reported by %s\n\n%s\n", info.Code, info.Code.Severity(), info.Code.Phase(), wrap(info.Summary, 88))
				if ex, ok := diag.Example(info.Code); ok {
					writeExample(stdout, ex)
				}
			}
			return nil
		},
	}
}

// writeExample prints a code's example, indented: a .moe file under its name, or an
// archive's command lines and the files they read.
func writeExample(w io.Writer, ex diag.CodeExample) {
	// The `// ERROR CODE` marks tell the examples' test which line reports the code; the
	// rendered diagnostic shows the reader the same.
	ex.Text = errorMark.ReplaceAllString(ex.Text, "")
	if ex.IsArchive() {
		fmt.Fprintf(w, "\nExample: the commands ($) and the files they read (-- NAME --):\n\n")
	} else {
		fmt.Fprintf(w, "\nExample: %s\n\n", ex.File)
	}
	indent(w, ex.Text)
	if ex.IsArchive() {
		return
	}
	_, sources, diags := check.Load(ex.File, func(name string) ([]byte, error) {
		if name == ex.File {
			return []byte(ex.Text), nil
		}
		return nil, fs.ErrNotExist
	})
	var rendered strings.Builder
	diag.RenderAll(&rendered, diags, sources)
	fmt.Fprintf(w, "\nmoec check %s says:\n\n", ex.File)
	indent(w, rendered.String())
}

var errorMark = regexp.MustCompile(`(?m)[ \t]*//\s*ERROR(?:\s+[EW]\d{4})+[ \t]*$`)

// indent writes text with each non-empty line indented by four spaces.
func indent(w io.Writer, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if line == "" {
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprintf(w, "    %s\n", line)
	}
}

// wrap breaks text into lines of at most width characters at spaces.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(text) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
