package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/internal/driver"
)

func newCheckCommand(stdout, stderr io.Writer) *cobra.Command {
	var explain bool
	cmd := &cobra.Command{
		Use:   "check [--explain] FILE.moe",
		Short: "Check a .moe file and report every error at once",
		Long: "Check parses and checks a .moe file and its imports, printing every error as\n" +
			"file:line:col: error[CODE]: summary with the source line and a caret under the range.\n" +
			"With --explain it prints the fully resolved program: every value after inheritance,\n" +
			"expressions and defaults, with where it came from.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			loaded := driver.Load(args[0])
			loaded.Render(stderr)
			if loaded.Diags.HasErrors() {
				return errDiagnostics
			}
			if explain {
				check.Explain(stdout, loaded.Program)
				return nil
			}
			fmt.Fprintf(stdout, "%s: ok\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&explain, "explain", false, "print every resolved value and where it came from")
	return cmd
}
