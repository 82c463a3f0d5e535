package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/lang/diag"
)

func newExplainCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "explain [CODE...]",
		Short: "Explain diagnostic codes (E0509, W9501, …); without a code, list them all",
		Long: "Explain prints what a diagnostic code means, whether it is an error or a warning, and\n" +
			"which part of moec reports it. Without arguments it lists every registered code.",
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
					e := diag.Runtimef(diag.ErrBadRunOption, "explain: %q is not a moec diagnostic code", a)
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
			}
			return nil
		},
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
